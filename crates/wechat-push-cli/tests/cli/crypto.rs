//! The `crypto` command-line contract, checked against WeChat's vectors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use super::bin;

const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const APPID: &str = "wxba5fad812f8e6fb9";
const PUSH: &str = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
const PUSH_PLAIN: &str = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn sign_prints_both_signatures() {
    let o = run(
        &[
            "crypto",
            "sign",
            "--token",
            "AAAAA",
            "--timestamp",
            "1714036504",
            "--nonce",
            "1514711492",
        ],
        None,
    );
    assert_eq!(stdout(&o), "f464b24fc39322e44b38aa78f5edd27bd1441696\n");
    let o = run(
        &[
            "crypto",
            "sign",
            "--token",
            "AAAAA",
            "--timestamp",
            "1714112445",
            "--nonce",
            "415670741",
            "--encrypt",
            PUSH,
        ],
        None,
    );
    assert_eq!(stdout(&o), "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3\n");
}

#[test]
fn decrypt_prints_the_message_byte_for_byte() {
    let o = run(
        &[
            "crypto",
            "decrypt",
            "--aes-key",
            KEY,
            "--appid",
            APPID,
            PUSH,
        ],
        None,
    );
    assert_eq!(stdout(&o), PUSH_PLAIN);
    // From stdin, with the signature verified, a trailing newline on input tolerated.
    let o = run(
        &[
            "crypto",
            "decrypt",
            "--aes-key",
            KEY,
            "--appid",
            APPID,
            "--token",
            "AAAAA",
            "--timestamp",
            "1714112445",
            "--nonce",
            "415670741",
            "--msg-signature",
            "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
        ],
        Some(format!("{PUSH}\n").as_bytes()),
    );
    assert_eq!(stdout(&o), PUSH_PLAIN);
}

#[test]
fn decrypt_failures_exit_non_zero_with_the_reason() {
    let o = run(
        &[
            "crypto",
            "decrypt",
            "--aes-key",
            KEY,
            "--appid",
            APPID,
            "--token",
            "AAAAA",
            "--timestamp",
            "1714112445",
            "--nonce",
            "1",
            "--msg-signature",
            "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
            PUSH,
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("msg_signature mismatch"));
    let o = run(
        &[
            "crypto",
            "decrypt",
            "--aes-key",
            KEY,
            "--appid",
            "wx0000000000000000",
            PUSH,
        ],
        None,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("appid mismatch: got wxba5fad812f8e6fb9, expected wx0000000000000000"),
        "{err}"
    );
    let o = run(
        &[
            "crypto",
            "decrypt",
            "--aes-key",
            "short",
            "--appid",
            APPID,
            PUSH,
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("EncodingAESKey must be 43 characters, got 5")
    );
}

#[test]
fn encrypt_with_random_is_deterministic_and_round_trips() {
    // WeChat's reply vector, reproduced byte for byte.
    let o = run(
        &[
            "crypto",
            "encrypt",
            "--aes-key",
            KEY,
            "--appid",
            APPID,
            "--random",
            "707722b803182950",
            r#"{"demo_resp":"good luck"}"#,
        ],
        None,
    );
    assert_eq!(
        stdout(&o),
        "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ==\n"
    );
    // Without --random, from stdin: differs each time but decrypts back.
    let a = stdout(&run(
        &["crypto", "encrypt", "--aes-key", KEY, "--appid", APPID],
        Some("你好\n".as_bytes()),
    ));
    let b = stdout(&run(
        &["crypto", "encrypt", "--aes-key", KEY, "--appid", APPID],
        Some("你好\n".as_bytes()),
    ));
    assert_ne!(a, b);
    let back = run(
        &[
            "crypto",
            "decrypt",
            "--aes-key",
            KEY,
            "--appid",
            APPID,
            a.trim(),
        ],
        None,
    );
    assert_eq!(stdout(&back), "你好\n");
    let o = run(
        &[
            "crypto",
            "encrypt",
            "--aes-key",
            KEY,
            "--appid",
            APPID,
            "--random",
            "short",
            "m",
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--random must be exactly 16 bytes, got 5"));
}

#[test]
fn parse_prints_typed_fields_and_kind() {
    let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oU]]></FromUserName><CreateTime>1482048670</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content><MsgId>6054768590064713728</MsgId></xml>";
    let o = run(&["crypto", "parse"], Some(xml.as_bytes()));
    assert_eq!(
        stdout(&o),
        "{\"ToUserName\":\"gh_1\",\"FromUserName\":\"oU\",\"CreateTime\":1482048670,\"MsgType\":\"text\",\"Content\":\"hi\",\"MsgId\":6054768590064713728,\"kind\":\"text\",\"MsgId_str\":\"6054768590064713728\"}\n"
    );
    let json = r#"{"ToUserName":"t","FromUserName":"u","CreateTime":"1620963428","MsgType":"event","Event":"new_thing","x":{"y":1}}"#;
    let o = run(
        &["crypto", "parse", "--format", "json"],
        Some(json.as_bytes()),
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["kind"], "unknown");
    assert_eq!(v["CreateTime"], 1620963428);
    assert_eq!(v["x"]["y"], 1);
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../wechat-push/tests/fixtures/messages/event.subscribe_msg_popup_event.xml"
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["crypto", "parse", fixture], None))).unwrap();
    assert_eq!(v["kind"], "event:subscribe_msg_popup_event");
    let o = run(
        &["crypto", "parse"],
        Some(b"<!DOCTYPE x [<!ENTITY a 'b'>]><xml/>"),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("DOCTYPE"));
}
