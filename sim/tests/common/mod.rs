//! Helpers shared by the simulator's integration tests.

use std::path::PathBuf;

/// A scenario file (in a fresh temp dir, returned too) that fails every seed: it cannot deliver
/// the 10^9 messages its `min_deliveries` asks for.
pub fn starved_scenario(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("flockmq-sim-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("starved.toml");
    std::fs::write(
        &file,
        "name = \"starved\"\nnodes = 1\nduration = \"3s\"\nseeds = [3]\n\
         [[workload]]\nkind = \"pubsub\"\npublishers = 1\nsubscribers = 1\n\
         filters = [\"a\"]\ntopics = [\"a\"]\n\
         [expect]\nconverge_within = \"2s\"\nmin_deliveries = 1000000000\n",
    )
    .unwrap();
    (dir, file)
}
