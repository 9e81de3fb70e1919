//! Replays the corpus of the fuzz target `config` (fuzz/corpus/config, see
//! docs/fuzzing.md) through the target's own body, `upgraded::config::fuzz_entry`: a
//! quick check in every test run, without nightly Rust or cargo-fuzz, that none of the
//! inputs the fuzzer kept makes the configuration loader panic.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

#[test]
fn config_corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config");
    let inputs = corpus(&dir);
    let failed: Vec<&PathBuf> = inputs
        .iter()
        .filter(|path| {
            let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            panic::catch_unwind(|| upgraded::config::fuzz_entry(&data)).is_err()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs panicked: {failed:?}",
        failed.len(),
        inputs.len()
    );
}

/// The files of a corpus directory; missing or empty is a failure, not a pass.
fn corpus(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no inputs in {}", dir.display());
    paths
}
