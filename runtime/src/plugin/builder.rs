//! How a [`PluginHost`] is configured before it starts.

use std::path::{Path, PathBuf};

use super::PluginHost;

/// How a [`PluginHost`] is built. It reads no environment: the command line (or the
/// embedding program) says where the compiled-component cache is and whether plugin
/// code is named for a profiler.
#[derive(Debug, Clone, Default)]
pub struct HostBuilder {
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) profiler: Profiler,
}

/// Whether compiled plugin functions are named for a profiler (build the plugin
/// without `strip` to keep the names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Profiler {
    #[default]
    None,
    /// `/tmp/perf-<pid>.map`, read by `perf report`.
    Perfmap,
    /// `jit-<pid>.dump`, for `perf inject --jit`.
    Jitdump,
}

impl HostBuilder {
    /// Caches compiled components in `dir` (none: compile every time).
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }

    /// Names compiled plugin code for `profiler`.
    pub fn profiler(mut self, profiler: Profiler) -> Self {
        self.profiler = profiler;
        self
    }

    /// The compiled-component cache folder, if any.
    pub fn cache_dir_path(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// Starts the host (its engine, linker and epoch ticker).
    pub fn build(&self) -> Result<PluginHost, super::PluginError> {
        PluginHost::start(self)
    }
}
