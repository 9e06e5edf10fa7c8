//! Creating a link table (or adopting one a concurrent run created) and checking an
//! existing one: its schema and its mode.

use super::*;

impl LinkTable {
    pub(super) fn check_schema(&self, t: &DeltaTable) -> Result<()> {
        let schema = t
            .snapshot()
            .map_err(|e| self.err(e))?
            .snapshot()
            .arrow_schema();
        for (name, ty) in &self.keys {
            match schema.field_with_name(name) {
                Ok(f) if f.data_type() == &crate::affected::arrow_type(*ty) => {}
                Ok(f) => {
                    return Err(self.err(format!(
                    "key column '{name}' is {} in the link table but the pipeline declares {ty}; \
                         point [link] uri at a new table or fix the key type",
                    f.data_type()
                )))
                }
                Err(_) => {
                    return Err(self.err(format!(
                        "the link table has no key column '{name}'; it belongs to another pipeline \
                         or the keys changed: point [link] uri at a new table"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The mode recorded in `t`, which must be the one the pipeline file asks for.
    pub(super) fn mode_of(&self, t: &DeltaTable) -> Result<LinkMode> {
        let snapshot = t.snapshot().map_err(|e| self.err(e))?;
        // Recorded at the end of the table's description: the Delta kernel refuses
        // table properties it does not know.
        let meta = serde_json::to_value(snapshot.metadata()).map_err(|e| self.err(e))?;
        let recorded = meta["description"]
            .as_str()
            .and_then(|d| d.rsplit_once(&format!("{MODE_PROPERTY}=")))
            .map(|(_, m)| m.trim().to_string());
        let found = match recorded.as_deref() {
            None => LinkMode::Latest,
            Some("latest") => LinkMode::Latest,
            Some("log") => LinkMode::Log,
            Some(m) => {
                return Err(self.err(format!(
                    "the link table's {MODE_PROPERTY} is '{m}', which this dlink-rt does not know; \
                     upgrade dlink-rt or point [link] uri at a new table"
                )))
            }
        };
        match self.asked {
            Some(asked) if asked != found => Err(self.err(format!(
                "the pipeline file asks for [link] mode = \"{asked}\" but the link table is a \"{found}\" table; \
                 remove `mode` to keep the table's, or point [link] uri at a new table"
            ))),
            _ => Ok(found),
        }
    }

    /// Creates the link table, or adopts the one a concurrent run just created.
    pub(super) async fn create(&self) -> Result<DeltaTable> {
        match self.try_create().await {
            Ok(t) => Ok(t),
            Err(create_err) => match self.builder()?.load().await {
                Ok(t) => {
                    self.check_schema(&t)?;
                    if self.mode_of(&t)? != self.mode {
                        return Err(
                            self.err("a concurrent run created the link table in another mode")
                        );
                    }
                    Ok(t)
                }
                Err(_) => Err(create_err),
            },
        }
    }

    pub(super) async fn try_create(&self) -> Result<DeltaTable> {
        let mut fields: Vec<StructField> = self
            .keys
            .iter()
            .map(|(n, t)| {
                let dt = match t {
                    KeyType::Long => DataType::LONG,
                    KeyType::Int => DataType::INTEGER,
                    KeyType::String => DataType::STRING,
                };
                StructField::new(n.clone(), dt, false)
            })
            .collect();
        fields.push(StructField::new(BATCH_ID, DataType::LONG, false));
        fields.push(StructField::new(
            UPSTREAMS,
            DataType::Array(Box::new(ArrayType::new(DataType::STRING, false))),
            true,
        ));
        fields.push(StructField::new(CHANGE_TS, DataType::TIMESTAMP, true));
        fields.push(StructField::new(UPDATED_AT, DataType::TIMESTAMP, false));
        self.builder()?
            .build()
            .map_err(|e| self.err(e))?
            .create()
            .with_table_name(format!("dlink_{}", self.pipeline))
            .with_comment(format!(
                "Affected keys of dlink-rt pipeline '{}'. Written only by dlink-rt. {MODE_PROPERTY}={}",
                self.pipeline,
                self.mode.as_str()
            ))
            .with_columns(fields)
            .with_configuration_property(TableProperty::EnableChangeDataFeed, Some("true"))
            .with_save_mode(SaveMode::ErrorIfExists)
            // A concurrent creator must fail, not commit a second CREATE after it.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await
            .map_err(|e| self.err(format!("cannot create the link table: {e}")))
    }
}
