//! What can go wrong with a plugin, as values: callers and tests match on the variant
//! (a timeout is not a trap is not a refused output); the `Display` text is the
//! sentence a user reads.

use std::fmt;
use std::path::PathBuf;

use wasmtime::{Store, Trap};

use super::State;
use crate::config::Limits;

/// The plugin export a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Init,
    Derive,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Init => "init",
            Call::Derive => "derive",
        })
    }
}

/// The tail of what the plugin wrote to stderr before it failed (shown after the
/// failure; empty when it wrote nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StderrTail(pub String);

impl fmt::Display for StderrTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "; the plugin's stderr: {}", self.0)
        }
    }
}

/// A plugin that cannot be loaded, or a call of it that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The host itself could not start (its engine, linker or epoch ticker).
    #[error("cannot start the plugin host: {0:#}")]
    HostStart(#[source] wasmtime::Error),

    /// The `.wasm` file cannot be read.
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),

    /// The file is not a component wasmtime can compile.
    #[error("not a valid WebAssembly component (build it for wasm32-wasip2 as a cdylib): {0:#}")]
    NotAComponent(#[source] wasmtime::Error),

    /// The component imports something the host does not provide.
    #[error(
        "imports something the host does not provide (only WASI p2 and dlink:pipeline/host): {0:#}"
    )]
    Imports(#[source] wasmtime::Error),

    /// The component exports neither contract's entry points.
    #[error(
        "exports neither contract's entry points (dlink:pipeline/plugin@0.2.0, or init and \
         derive of 0.1.0); build it with dlink-plugin-sdk for wasm32-wasip2"
    )]
    NoContract,

    /// The component does not export the contract's functions with its types.
    #[error("does not export the {contract} world's functions with their types: {source:#}")]
    Exports {
        contract: super::Contract,
        #[source]
        source: wasmtime::Error,
    },

    /// The pipeline's description (its schemas) cannot be encoded for `init`.
    #[error("cannot encode the pipeline's schemas for init: {0}")]
    Info(#[source] deltalake::arrow::error::ArrowError),

    /// A folder of `[plugin] read_dirs` cannot be granted.
    #[error("cannot grant read access to {} as /{name}: {source:#}", dir.display())]
    ReadDir {
        name: String,
        dir: PathBuf,
        #[source]
        source: wasmtime::Error,
    },

    /// Instantiation failed (a start function trapped, a link error).
    #[error(
        "cannot instantiate: {0:#}; the plugin must target the world dlink:pipeline/pipeline-plugin \
         and import nothing else than WASI p2"
    )]
    Instantiate(#[source] wasmtime::Error),

    /// The plugin returned an error: `init` refused its configuration, or `derive` its
    /// batch.
    #[error("{}: {message}", match call {
        Call::Init => "init rejected the pipeline",
        Call::Derive => "derive returned an error",
    })]
    Rejected { call: Call, message: String },

    /// The call ran past `[plugin.limits] timeout_ms`.
    #[error(
        "{call} exceeded its time budget of {timeout_ms} ms ([plugin.limits] timeout_ms){stderr}"
    )]
    Timeout {
        call: Call,
        timeout_ms: u64,
        stderr: StderrTail,
    },

    /// The guest tried to grow its memory past `[plugin.limits] memory_mb`.
    #[error(
        "{call} exceeded its memory cap of {memory_mb} MiB ([plugin.limits] memory_mb){stderr}"
    )]
    MemoryCap {
        call: Call,
        memory_mb: u64,
        stderr: StderrTail,
    },

    /// The guest trapped (a panic, an unreachable, an out-of-bounds access).
    #[error("{call} trapped ({trap}){stderr}")]
    Trap {
        call: Call,
        #[source]
        trap: wasmtime::Trap,
        stderr: StderrTail,
    },

    /// The call failed in the host (a host import's error, a lifting error).
    #[error("{call} failed: {source:#}{stderr}")]
    Failed {
        call: Call,
        #[source]
        source: wasmtime::Error,
        stderr: StderrTail,
    },

    /// `derive` returned more than `[plugin.limits] max_output_mb`.
    #[error(
        "derive returned {bytes} bytes, more than the output cap of {cap_mb} MiB ([plugin.limits] max_output_mb)"
    )]
    OutputTooLarge { bytes: usize, cap_mb: u64 },

    /// The guest tried to copy more to the host in one call than the output cap allows
    /// (wasmtime's hostcall fuel, sized from `max_output_mb`).
    #[error(
        "{call} tried to hand the host more than the output cap of {cap_mb} MiB in one call \
         ([plugin.limits] max_output_mb){stderr}"
    )]
    CopyCap {
        call: Call,
        cap_mb: u64,
        stderr: StderrTail,
    },

    /// `derive`'s output is not what the contract asks for (schema, key types, nulls,
    /// unknown upstreams).
    #[error(transparent)]
    InvalidOutput {
        reason: Box<crate::affected::InvalidKeys>,
    },
}

/// Classifies a failed call by what wasmtime reports (the trap code) and what the
/// store saw (a refused memory growth), never by the message's text.
pub(super) fn describe_trap(
    store: &Store<State>,
    limits: &Limits,
    call: Call,
    e: wasmtime::Error,
) -> PluginError {
    let stderr = stderr_tail(store);
    if store.data().limits.refused {
        return PluginError::MemoryCap {
            call,
            memory_mb: limits.memory_mb,
            stderr,
        };
    }
    match e.downcast_ref::<Trap>().copied() {
        Some(Trap::Interrupt) => PluginError::Timeout {
            call,
            timeout_ms: limits.timeout_ms,
            stderr,
        },
        Some(trap) => PluginError::Trap { call, trap, stderr },
        // wasmtime's error type for this is private: its text is all there is.
        None if format!("{e:#}").contains("fuel allocated for hostcalls has been exhausted") => {
            PluginError::CopyCap {
                call,
                cap_mb: limits.max_output_mb,
                stderr,
            }
        }
        None => PluginError::Failed {
            call,
            source: e,
            stderr,
        },
    }
}

/// The last 2,000 bytes the plugin wrote to stderr.
pub(super) fn stderr_tail(store: &Store<State>) -> StderrTail {
    let stderr = store.data().stderr.contents();
    let tail = String::from_utf8_lossy(&stderr);
    let tail = tail.trim();
    let start = tail.len().saturating_sub(2000);
    let start = (start..tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(0);
    StderrTail(tail[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_say_what_and_which_setting() {
        let e = PluginError::Timeout {
            call: Call::Derive,
            timeout_ms: 50,
            stderr: StderrTail("spinning".into()),
        };
        assert_eq!(
            e.to_string(),
            "derive exceeded its time budget of 50 ms ([plugin.limits] timeout_ms); the plugin's stderr: spinning"
        );
        let e = PluginError::Rejected {
            call: Call::Init,
            message: "no field x".into(),
        };
        assert_eq!(e.to_string(), "init rejected the pipeline: no field x");
        let e = PluginError::Trap {
            call: Call::Init,
            trap: wasmtime::Trap::UnreachableCodeReached,
            stderr: StderrTail::default(),
        };
        assert!(e.to_string().starts_with("init trapped ("), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
