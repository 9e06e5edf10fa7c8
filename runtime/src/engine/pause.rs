//! The test hook that stops a run at an exact point of a batch.

/// Where [`pause_at`] stops the process, if anywhere.
static PAUSE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Test hook: with `<point>:<batch>` (the command line's hidden `--test-pause-at`,
/// `DLINK_TEST_PAUSE_AT`), the process announces `DLINK_TEST_PAUSED <point>:<batch>`
/// on stderr and stops there, so a test can SIGKILL it at an exact point. Points:
/// `after-read`, `before-commit`, `after-commit`. Set once, before the first batch.
pub fn pause_at(point: String) {
    let _first_setting_wins = PAUSE.set(point);
}

pub(crate) fn test_pause(point: &str, batch_id: i64) {
    let Some(want) = PAUSE.get() else {
        return;
    };
    if *want == format!("{point}:{batch_id}") {
        eprintln!("DLINK_TEST_PAUSED {want}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
