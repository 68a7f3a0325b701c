//! The example config in the repository parses, and says what the defaults are.

use wechat_push::config::{Config, DEFAULTS};
use wechat_push::{Format, Mode};

fn example() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../wechat-push.example.toml"
    );
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn example_config_parses() {
    let config = Config::from_toml(&example()).unwrap();
    assert_eq!(config.apps.len(), 1);
    assert_eq!(config.apps[0].mode, Mode::Safe);
    assert_eq!(config.apps[0].format, Format::Json);
    assert_eq!(config.server.listen.port(), 8080);
}

#[test]
fn example_config_states_every_default() {
    // Each section of the built-in defaults, as written in the example.
    let example: toml::Table = example().parse().unwrap();
    let defaults: toml::Table = DEFAULTS.parse().unwrap();
    for (section, keys) in &defaults {
        let keys = keys.as_table().unwrap();
        for (key, value) in keys {
            assert_eq!(
                example[section].get(key),
                Some(value),
                "{section}.{key} differs from the default"
            );
        }
    }
}
