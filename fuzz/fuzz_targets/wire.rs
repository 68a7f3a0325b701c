//! The wire parser on any bytes: XML and JSON bodies and envelopes never
//! panic, and WeChat's simple XML shape is read by the small tokenizer
//! exactly as quick-xml reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wechat_push::protocol::wire::{self, Limits};
use wechat_push::Format;

fuzz_target!(|data: &[u8]| {
    // Small limits, so that the fuzzer meets them.
    let limits = Limits {
        max_body: 64 << 10,
        max_depth: 8,
        max_field: 4 << 10,
        max_fields: 256,
    };
    wire::assert_xml_readers_agree(data, &limits);
    let _ = wire::parse(Format::Xml, data, &limits);
    let _ = wire::parse(Format::Json, data, &limits);
    let _ = wire::encrypt_of(Format::Json, data, &limits);
    let _ = wire::sniff(data);
});
