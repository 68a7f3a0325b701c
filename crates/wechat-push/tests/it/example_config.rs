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

#[test]
fn example_forward_block_parses_and_states_the_defaults() {
    // The commented [[apps.forward]] block, uncommented.
    let example = example();
    let start = example.find("# [[apps.forward]]").unwrap();
    let block: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with("# "))
        .map(|l| format!("{}\n", &l[2..]))
        .collect();
    let config = Config::from_toml(&format!("{example}\n{block}")).unwrap();
    let stated = &config.apps[0].forward[0];
    let minimal = Config::from_toml(&format!(
        "{example}\n[[apps.forward]]\nurl = \"http://127.0.0.1:9000/\"\nsecret = \"s\"\n"
    ))
    .unwrap();
    let defaults = &minimal.apps[0].forward[0];
    assert_eq!(stated.timeout, defaults.timeout);
    assert_eq!(stated.retry_schedule, defaults.retry_schedule);
    assert_eq!(stated.max_in_flight, defaults.max_in_flight);
    assert_eq!(stated.passive_reply, defaults.passive_reply);
    assert_eq!(stated.only.as_ref().unwrap().len(), 3);
}
