use super::*;

#[test]
fn since_accepts_durations_and_times_and_names_the_forms() {
    let now = DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap();
    let at = |s: &str| parse_since(s, now).map(|t| t.to_rfc3339());
    assert_eq!(at("2h").unwrap(), "2026-12-02T10:00:00+00:00");
    assert_eq!(at("90s").unwrap(), "2026-12-02T11:58:30+00:00");
    assert_eq!(at("7d").unwrap(), "2026-11-25T12:00:00+00:00");
    assert_eq!(
        at("2026-12-01T00:00:00Z").unwrap(),
        "2026-12-01T00:00:00+00:00"
    );
    for bad in ["2 hours", "h", "-3h", "yesterday", ""] {
        let e = at(bad).unwrap_err();
        assert!(e.contains(bad) && e.contains("RFC 3339"), "{bad}: {e}");
    }
}
