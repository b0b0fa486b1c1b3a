//! The configuration file parser (`Config::from_text`, what `Config::load` does with a file) on
//! arbitrary text. Checked:
//! - nothing panics;
//! - a config that parses renders (`check-config` prints `render()`) to text that parses back
//!   to an equal config and renders to the same text.
#![no_main]

use std::path::Path;

use flockmq::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.conf");
    let Ok(config) = Config::from_text(text, path) else {
        return;
    };
    let rendered = config.render();
    let again = match Config::from_text(&rendered, path) {
        Ok(c) => c,
        Err(e) => panic!("rendered config does not parse: {e}\n{rendered}"),
    };
    assert_eq!(
        again, config,
        "rendered config parses differently:\n{rendered}"
    );
    assert_eq!(again.render(), rendered);
});
