//! `Message::from_fields` on any fields (read as JSON or XML): typed, or an
//! error naming the field; its key, kind and JSON form never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wechat_push::protocol::wire::{self, Limits};
use wechat_push::{Format, Message};

fuzz_target!(|data: &[u8]| {
    for format in [Format::Json, Format::Xml] {
        let Ok(fields) = wire::parse(format, data, &Limits::default()) else {
            continue;
        };
        if let Ok(message) = Message::from_fields(fields) {
            let _ = message.dedup_key();
            let _ = message.kind();
            let _ = message.msg_id();
            let _ = serde_json::to_string(&message.to_json());
        }
    }
});
