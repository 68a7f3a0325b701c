//! Raw wire bodies: XML or JSON bytes into an ordered map of fields, and back.
//!
//! This is the only place that reads WeChat's XML and JSON. Everything above
//! it sees [`Fields`]: an ordered map from WeChat's own field names to values,
//! which keeps every field of a push, known or not.
//!
//! XML maps onto the same shape as JSON so that one typed layer serves both:
//! an element with children becomes an object, repeated children become an
//! array, and text becomes a string, except text outside CDATA that is a
//! number (WeChat writes strings as CDATA and numbers bare), which becomes a
//! number when that is lossless.
//!
//! Hostile input is bounded here: body size, nesting depth, field size and
//! field count; XML with a DOCTYPE (and so any entity declaration) is refused.

use quick_xml::events::Event as XmlEvent;
use quick_xml::Reader;
use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use super::Format;

/// Every field of a push under WeChat's own names, in the order received.
pub type Fields = Map<String, Value>;

/// Bounds applied to every body before and while it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted body, in bytes.
    pub max_body: usize,
    /// Deepest accepted nesting of elements or objects (the root counts as 1).
    pub max_depth: usize,
    /// Largest accepted text of one field, in bytes.
    pub max_field: usize,
    /// Most fields (elements or object members, at any depth) in one body.
    pub max_fields: usize,
}

impl Default for Limits {
    /// Generous for any real push (the largest are a few KB) and small enough
    /// that a hostile body costs little: 1 MiB, depth 16, 256 KiB per field,
    /// 4096 fields.
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            max_depth: 16,
            max_field: 256 << 10,
            max_fields: 4096,
        }
    }
}

/// Why a body could not be read into [`Fields`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The body is larger than [`Limits::max_body`].
    #[error("body is {len} bytes, over the limit of {max}")]
    BodyTooLarge {
        /// Size of the body, in bytes.
        len: usize,
        /// [`Limits::max_body`], in bytes.
        max: usize,
    },
    /// The body is empty or only white space.
    #[error("body is empty")]
    Empty,
    /// XML with a DOCTYPE, the only place entities can be declared.
    #[error("XML with a DOCTYPE or entity declarations is refused")]
    Doctype,
    /// Elements or objects nest deeper than [`Limits::max_depth`].
    #[error("nesting deeper than {max} levels")]
    TooDeep {
        /// [`Limits::max_depth`], in levels (the root counts as 1).
        max: usize,
    },
    /// One field's text is larger than [`Limits::max_field`].
    #[error("field {name} is {len} bytes, over the limit of {max}")]
    FieldTooLarge {
        /// The field's name.
        name: String,
        /// Size of its text, in bytes.
        len: usize,
        /// [`Limits::max_field`], in bytes.
        max: usize,
    },
    /// More fields than [`Limits::max_fields`].
    #[error("more than {max} fields")]
    TooManyFields {
        /// [`Limits::max_fields`], counted at any depth.
        max: usize,
    },
    /// The XML is not well formed.
    #[error("malformed XML")]
    Xml(#[source] quick_xml::Error),
    /// The XML has text outside any element, or no root element.
    #[error("malformed XML: {0}")]
    XmlShape(&'static str),
    /// The JSON is not well formed.
    #[error("malformed JSON")]
    Json(#[source] serde_json::Error),
    /// The JSON body is valid but not an object.
    #[error("JSON body is not an object")]
    NotAnObject,
    /// Text that is not UTF-8.
    #[error("text is not UTF-8")]
    Utf8(#[source] std::str::Utf8Error),
}

/// Guess a body's format from its first significant byte: `<` is XML, `{` JSON.
///
/// WeChat applies a change of data format in the console at once, so a server
/// that sniffs keeps working through the switch instead of refusing pushes.
pub fn sniff(body: &[u8]) -> Option<Format> {
    let first = body
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF)?;
    match first {
        b'<' => Some(Format::Xml),
        b'{' => Some(Format::Json),
        _ => None,
    }
}

/// Parse a body in the given format into its fields.
///
/// # Errors
/// Any [`WireError`]: too large, malformed, too deep, a field too large, or a
/// DOCTYPE in XML.
pub fn parse(format: Format, body: &[u8], limits: &Limits) -> Result<Fields, WireError> {
    match format {
        Format::Xml => parse_xml(body, limits),
        Format::Json => parse_json(body, limits),
    }
}

/// The `Encrypt` field of an envelope, if it has one, without building the
/// envelope's fields: an encrypted push is read for this one value. The
/// whole body is still read and checked (well-formed, bounded, no DOCTYPE).
///
/// # Errors
/// As [`parse`]; also when `Encrypt` is present but not text.
pub fn encrypt_of<'a>(
    format: Format,
    body: &'a [u8],
    limits: &Limits,
) -> Result<Option<Cow<'a, str>>, WireError> {
    check_size(body, limits)?;
    match format {
        Format::Json => {
            #[derive(serde::Deserialize)]
            struct Envelope<'a> {
                #[serde(rename = "Encrypt", borrow)]
                encrypt: Option<Cow<'a, str>>,
            }
            check_json_depth(body, limits)?;
            let envelope: Envelope = serde_json::from_slice(body).map_err(WireError::Json)?;
            Ok(envelope.encrypt)
        }
        Format::Xml => {
            // The simple shape (nearly every push) without building fields.
            if let Some(encrypt) = encrypt_of_simple(body, limits) {
                return Ok(encrypt);
            }
            // Compatible mode carries the plaintext fields too, and with
            // them WeChat's unsplit CDATA (see `repair_unsplit_cdata`).
            Ok(encrypt_of_xml(body, limits)?.map(Cow::Owned))
        }
    }
}

/// [`encrypt_of`] for any XML, with quick-xml (WeChat's unsplit CDATA
/// split first: compatible mode carries the plaintext fields too).
fn encrypt_of_xml(body: &[u8], limits: &Limits) -> Result<Option<String>, WireError> {
    let split = split_unsplit_cdata(body);
    let body = split.as_deref().unwrap_or(body);
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let (mut depth, mut seen_root, mut in_encrypt) = (0usize, false, false);
    let mut count = 0usize;
    let mut encrypt: Option<String> = None;
    // Every element counts against the field limit, as when fields are built.
    let mut counted = || {
        count += 1;
        if count > limits.max_fields {
            return Err(WireError::TooManyFields {
                max: limits.max_fields,
            });
        }
        Ok(())
    };
    loop {
        match reader.read_event().map_err(WireError::Xml)? {
            XmlEvent::Start(start) => {
                if depth == 0 && seen_root {
                    return Err(WireError::XmlShape("content after the root element"));
                }
                depth += 1;
                seen_root = true;
                if depth > limits.max_depth {
                    return Err(WireError::TooDeep {
                        max: limits.max_depth,
                    });
                }
                counted()?;
                if depth == 2 && start.name().as_ref() == b"Encrypt" {
                    in_encrypt = true;
                    encrypt = Some(String::new());
                }
            }
            XmlEvent::End(_) => {
                depth = depth.saturating_sub(1);
                in_encrypt = false;
            }
            XmlEvent::Empty(_) => {
                if depth == 0 && seen_root {
                    return Err(WireError::XmlShape("content after the root element"));
                }
                if depth >= limits.max_depth {
                    return Err(WireError::TooDeep {
                        max: limits.max_depth,
                    });
                }
                seen_root = true;
                counted()?;
            }
            XmlEvent::Text(text) if in_encrypt => {
                let text = text.unescape().map_err(WireError::Xml)?;
                if let Some(e) = encrypt.as_mut() {
                    e.push_str(&text);
                }
            }
            XmlEvent::CData(data) if in_encrypt => {
                let text = std::str::from_utf8(&data).map_err(WireError::Utf8)?;
                if let Some(e) = encrypt.as_mut() {
                    e.push_str(text);
                }
            }
            XmlEvent::Text(_) | XmlEvent::CData(_) if depth == 0 => {
                return Err(WireError::XmlShape("text outside the root element"));
            }
            XmlEvent::DocType(_) => return Err(WireError::Doctype),
            XmlEvent::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(WireError::XmlShape("unclosed element"));
    }
    if !seen_root {
        return Err(WireError::XmlShape("no root element"));
    }
    Ok(encrypt)
}

/// Parse a JSON object body into its fields.
///
/// # Errors
/// See [`parse`].
pub fn parse_json(body: &[u8], limits: &Limits) -> Result<Fields, WireError> {
    check_size(body, limits)?;
    parse_json_sized(body, limits)
}

/// [`parse_json`] of a body whose size is checked already (a body with its
/// wide integers quoted is longer than the one received).
fn parse_json_sized(body: &[u8], limits: &Limits) -> Result<Fields, WireError> {
    let value: Value = serde_json::from_slice(body).map_err(WireError::Json)?;
    let Value::Object(fields) = value else {
        return Err(WireError::NotAnObject);
    };
    let mut count = 0;
    let mut inexact = false;
    for (name, value) in &fields {
        check_json(name, value, 2, &mut count, &mut inexact, limits)?;
    }
    if inexact {
        // An integer wider than 64 bits became a float: read the body again
        // with such integers as text, so that their exact digits survive.
        if let Some(exact) = quote_wide_integers(body) {
            return parse_json_sized(&exact, limits);
        }
    }
    Ok(fields)
}

/// Refuse JSON nested deeper than [`Limits::max_depth`] (the outer object
/// counting as 1, as XML's root does; an array is not a level, as in
/// [`parse_json`]), in one pass over the bytes, before anything is built.
fn check_json_depth(body: &[u8], limits: &Limits) -> Result<(), WireError> {
    let (mut objects, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => {
                objects += 1;
                if objects > limits.max_depth {
                    return Err(WireError::TooDeep {
                        max: limits.max_depth,
                    });
                }
            }
            b'}' => objects = objects.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `body` with every integer literal that fits neither `u64` nor `i64`
/// written as a string of its digits; `None` when it has none.
fn quote_wide_integers(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let (mut i, mut changed) = (0, false);
    while i < body.len() {
        match body[i] {
            b'"' => {
                // Copy the string whole, escapes included.
                let start = i;
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(body.len());
                out.extend_from_slice(&body[start..i]);
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < body.len()
                    && matches!(body[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let literal = &body[start..i];
                let digits = literal.strip_prefix(b"-").unwrap_or(literal);
                let integer = !digits.is_empty() && digits.iter().all(u8::is_ascii_digit);
                let fits = std::str::from_utf8(literal)
                    .is_ok_and(|t| t.parse::<u64>().is_ok() || t.parse::<i64>().is_ok());
                if integer && !fits {
                    out.push(b'"');
                    out.extend_from_slice(literal);
                    out.push(b'"');
                    changed = true;
                } else {
                    out.extend_from_slice(literal);
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

/// Check one field against the limits; set `inexact` on an integer-valued
/// float too large for 64 bits (an integer literal serde_json rounded).
fn check_json(
    name: &str,
    value: &Value,
    depth: usize,
    count: &mut usize,
    inexact: &mut bool,
    limits: &Limits,
) -> Result<(), WireError> {
    *count += 1;
    if *count > limits.max_fields {
        return Err(WireError::TooManyFields {
            max: limits.max_fields,
        });
    }
    match value {
        Value::String(s) if s.len() > limits.max_field => Err(WireError::FieldTooLarge {
            name: name.to_owned(),
            len: s.len(),
            max: limits.max_field,
        }),
        Value::Object(_) | Value::Array(_) if depth > limits.max_depth => Err(WireError::TooDeep {
            max: limits.max_depth,
        }),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(n, v)| check_json(n, v, depth + 1, count, inexact, limits)),
        // An array is a repeated field, not a level of its own, as in XML.
        Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_json(name, v, depth, count, inexact, limits)),
        Value::Number(n) => {
            if n.as_f64()
                .is_some_and(|f| n.is_f64() && f.fract() == 0.0 && f.abs() >= 9.2e18)
            {
                *inexact = true;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_size(body: &[u8], limits: &Limits) -> Result<(), WireError> {
    if body.len() > limits.max_body {
        return Err(WireError::BodyTooLarge {
            len: body.len(),
            max: limits.max_body,
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(WireError::Empty);
    }
    Ok(())
}

/// An element being read: its name, the children seen so far and its text.
///
/// Name and text borrow from the body where they can: most names and every
/// number never need a copy of their own.
struct Frame<'a> {
    name: Cow<'a, str>,
    children: Fields,
    text: Cow<'a, str>,
    /// Whether any of the text came from CDATA (then it is a string).
    cdata: bool,
}

impl<'a> Frame<'a> {
    fn new(name: Cow<'a, str>) -> Self {
        Frame {
            name,
            children: Fields::new(),
            text: Cow::Borrowed(""),
            cdata: false,
        }
    }

    fn into_value(self) -> Value {
        if !self.children.is_empty() {
            return Value::Object(self.children);
        }
        if !self.cdata {
            if let Some(number) = lossless_number(&self.text) {
                return Value::Number(number);
            }
        }
        Value::String(self.text.into_owned())
    }

    /// Add it to its parent's fields under its name.
    fn into_parent(mut self, parent: &mut Frame<'a>) {
        let name = std::mem::take(&mut self.name).into_owned();
        insert(&mut parent.children, name, self.into_value());
    }
}

/// A bare number that prints back exactly as written, else `None`.
fn lossless_number(text: &str) -> Option<Number> {
    let bytes = text.as_bytes();
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if digits.is_empty() || !digits[0].is_ascii_digit() {
        return None;
    }
    // "007" would print back as 7: such values stay strings.
    if digits.len() > 1 && digits[0] == b'0' && digits[1].is_ascii_digit() {
        return None;
    }
    if digits.iter().all(u8::is_ascii_digit) {
        if let Ok(n) = text.parse::<u64>() {
            return Some(n.into());
        }
        return text.parse::<i64>().ok().map(Number::from);
    }
    let float: f64 = text.parse().ok()?;
    let number = Number::from_f64(float)?;
    (number.to_string() == text).then_some(number)
}

/// Add a value under `name`, turning a repeated name into an array.
fn insert(fields: &mut Fields, name: String, value: Value) {
    if fields.is_empty() {
        // Sized for a whole text message at once, not grown (and rehashed)
        // field by field; only elements with children get here. Eight
        // entries (112 bytes each) stay within glibc's per-thread cache,
        // whose misses merge into the heap top and consolidate its free
        // lists on every free.
        *fields = Fields::with_capacity(8);
    }
    // One hash of the name, found or not.
    match fields.entry(name) {
        serde_json::map::Entry::Vacant(slot) => {
            slot.insert(value);
        }
        serde_json::map::Entry::Occupied(mut slot) => {
            let existing = slot.get_mut();
            match existing {
                Value::Array(items) => items.push(value),
                _ => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, value]);
                }
            }
        }
    }
}

/// Parse an XML body (`<xml>…</xml>`) into its fields.
///
/// # Errors
/// See [`parse`].
pub fn parse_xml(body: &[u8], limits: &Limits) -> Result<Fields, WireError> {
    check_size(body, limits)?;
    // Nearly every push has the simple shape; anything else, including every
    // error, is left to the general parser, which decides.
    if let Some(fields) = parse_xml_simple(body, limits) {
        return Ok(fields);
    }
    parse_xml_general(body, limits)
}

/// Where CDATA sections end, read as WeChat writes them.
///
/// WeChat does not split a section whose text holds `]]>`: the text
/// `see <b><![CDATA[x]]></b> here` arrives as
/// `<Content><![CDATA[see <b><![CDATA[x]]></b> here]]></Content>`
/// (silenceper/wechat#750). So a section opened right after the start tag
/// of `element` ends at the first `]]>` followed (white space aside) by
/// `</element>` or by another `<![CDATA[` (a section split as XML
/// requires); only when no `]]>` is, at the first one. Every other section
/// ends at its first `]]>`, as XML says.
///
/// Linear in the body whatever it holds: a section whose first `]]>` is
/// followed by its end tag (every section WeChat splits right, nearly all)
/// costs nothing more; the first one that is not builds an index of every
/// `]]>` by what follows it, in one pass, and each later section looks its
/// end up there (a hostile body of many such sections must not cost a scan
/// of the rest of the body each).
struct CdataEnds<'a> {
    body: &'a [u8],
    index: Option<CloseIndex<'a>>,
}

/// Every `]]>` of a body that is followed by an end tag (by the tag's
/// name) or by `<![CDATA[`, in order.
struct CloseIndex<'a> {
    closing: std::collections::HashMap<&'a [u8], Vec<usize>>,
    opening: Vec<usize>,
}

impl<'a> CloseIndex<'a> {
    fn build(body: &'a [u8]) -> Self {
        let mut index = CloseIndex {
            closing: std::collections::HashMap::new(),
            opening: Vec::new(),
        };
        for at in memchr::memmem::find_iter(body, b"]]>") {
            let after = skip_ws(body, at + 3);
            let rest = &body[after..];
            if rest.starts_with(b"<![CDATA[") {
                index.opening.push(at);
            } else if let Some(tag) = rest.strip_prefix(b"</") {
                let len = tag
                    .iter()
                    .position(|&b| !NAME_BYTE[usize::from(b)])
                    .unwrap_or(tag.len());
                if len > 0 && body.get(skip_ws(body, after + 2 + len)) == Some(&b'>') {
                    index.closing.entry(&tag[..len]).or_default().push(at);
                }
            }
        }
        index
    }
}

/// The first of `sorted` at or after `from`.
fn first_from(sorted: &[usize], from: usize) -> Option<usize> {
    sorted.get(sorted.partition_point(|&p| p < from)).copied()
}

impl<'a> CdataEnds<'a> {
    fn new(body: &'a [u8]) -> Self {
        CdataEnds { body, index: None }
    }

    /// The index in the body of the `]]>` that ends the section whose
    /// content starts at `content`, opened right after the start tag of
    /// `element` if it was.
    fn end(&mut self, content: usize, element: Option<&[u8]>) -> Option<usize> {
        let body = self.body;
        let first = find_cdata_close(body, content)?;
        let Some(name) = element else {
            return Some(first);
        };
        let after = skip_ws(body, first + 3);
        let rest = &body[after..];
        let closes = rest.starts_with(b"</")
            && rest[2..].starts_with(name)
            && body.get(skip_ws(body, after + 2 + name.len())) == Some(&b'>');
        if closes || rest.starts_with(b"<![CDATA[") {
            return Some(first);
        }
        let index = self.index.get_or_insert_with(|| CloseIndex::build(body));
        let closing = index
            .closing
            .get(name)
            .and_then(|ends| first_from(ends, first));
        let opening = first_from(&index.opening, first);
        Some(match (closing, opening) {
            (Some(c), Some(o)) => c.min(o),
            (Some(e), None) | (None, Some(e)) => e,
            (None, None) => first,
        })
    }
}

/// The index of the first `]]>` in `bytes` at or after `from`: a scan for
/// `]`, which CDATA content rarely holds (cheaper than setting up a
/// substring search per section).
fn find_cdata_close(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        at += memchr::memchr(b']', bytes.get(at..)?)?;
        if bytes[at..].starts_with(b"]]>") {
            return Some(at);
        }
        at += 1;
    }
}

/// The index of the first byte at or after `from` that is not XML white
/// space (space, tab, CR, LF: what both readers trim).
fn skip_ws(bytes: &[u8], from: usize) -> usize {
    bytes
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| !is_xml_ws(b)))
        .map_or(bytes.len(), |n| from + n)
}

fn is_xml_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `body` with every CDATA section that [`CdataEnds`] reads past its first
/// `]]>` split as XML requires, so that quick-xml reads what the simple
/// reader reads; `None` when no section needed it (nearly always).
fn split_unsplit_cdata(body: &[u8]) -> Option<Vec<u8>> {
    const OPEN: &[u8] = b"<![CDATA[";
    const CLOSE: &[u8] = b"]]>";
    let mut ends = CdataEnds::new(body);
    let mut out = Vec::new();
    let (mut copied, mut from) = (0, 0);
    let openings = memchr::memmem::Finder::new(OPEN);
    while let Some(found) = openings.find(&body[from..]) {
        let open = from + found;
        let content = open + OPEN.len();
        let element = element_before(&body[from..open]);
        let Some(end) = ends.end(content, element) else {
            break;
        };
        from = end + CLOSE.len();
        if memchr::memmem::find(&body[content..end], CLOSE).is_none() {
            continue;
        }
        if out.is_empty() {
            out.reserve(body.len() + 32);
        }
        out.extend_from_slice(&body[copied..content]);
        let mut text = &body[content..end];
        while let Some(at) = memchr::memmem::find(text, CLOSE) {
            out.extend_from_slice(&text[..at]);
            out.extend_from_slice(b"]]]]><![CDATA[>");
            text = &text[at + CLOSE.len()..];
        }
        out.extend_from_slice(text);
        copied = end;
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&body[copied..]);
    Some(out)
}

/// The name of the start tag that `before` ends with (white space after it
/// allowed), when it ends with one.
fn element_before(before: &[u8]) -> Option<&[u8]> {
    let end = before.iter().rposition(|&b| !is_xml_ws(b))?;
    if before[end] != b'>' {
        return None;
    }
    let start = before[..end].iter().rposition(|&b| b == b'<')?;
    let tag = &before[start + 1..end];
    let len = tag
        .iter()
        .position(|&b| !NAME_BYTE[usize::from(b)])
        .unwrap_or(tag.len());
    (len > 0 && tag[len..].iter().all(|&b| is_xml_ws(b))).then(|| &tag[..len])
}

/// A token of the simple shape.
enum Simple<'a> {
    /// `<name>`.
    Start(&'a str),
    /// `</name>`.
    End(&'a str),
    /// Text between tags, trimmed, not empty.
    Text(&'a str),
    /// The content of `<![CDATA[…]]>`.
    CData(&'a str),
}

/// Tokens of the shape WeChat sends, read without an XML library: elements
/// with plain names and no attributes, text without entities, CDATA,
/// whitespace between them. `None` at the first thing outside that shape
/// (declarations, comments, DOCTYPE, entities, attributes, empty elements,
/// invalid UTF-8): the caller then leaves the body to quick-xml, which
/// decides. Nesting is the caller's to check.
struct SimpleTokens<'a> {
    /// The body, valid UTF-8 (checked once: every token is a slice of it).
    body: &'a str,
    pos: usize,
    /// The element whose start tag was the last token (white space aside):
    /// a CDATA section right after it is read as WeChat writes it ([`CdataEnds`]).
    just_opened: Option<&'a str>,
    cdata: CdataEnds<'a>,
}

/// The bytes of a plain element name: ASCII letters, digits, `_ - . :`.
const NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':');
        b += 1;
    }
    table
};

impl<'a> SimpleTokens<'a> {
    /// Tokens of `body`; `None` when it is not UTF-8 (outside the shape).
    fn new(body: &'a [u8]) -> Option<Self> {
        Some(SimpleTokens {
            body: std::str::from_utf8(body).ok()?,
            pos: 0,
            just_opened: None,
            cdata: CdataEnds::new(body),
        })
    }

    /// The next token; `Some(None)` at the end; `None` outside the shape.
    fn next(&mut self) -> Option<Option<Simple<'a>>> {
        let token = self.token()?;
        self.just_opened = match token {
            Some(Simple::Start(name)) => Some(name),
            _ => None,
        };
        Some(token)
    }

    fn token(&mut self) -> Option<Option<Simple<'a>>> {
        let body = self.body;
        let bytes = body.as_bytes();
        loop {
            if self.pos >= bytes.len() {
                return Some(None);
            }
            // Every index below is at an ASCII delimiter or just after one,
            // so slicing `body` there is at a character boundary.
            if bytes[self.pos] != b'<' {
                let start = self.pos;
                let end = memchr::memchr(b'<', &bytes[start..]).map_or(bytes.len(), |i| start + i);
                self.pos = end;
                let text = body
                    .get(start..end)?
                    .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
                if text.is_empty() {
                    continue;
                }
                if text.contains('&') {
                    return None;
                }
                return Some(Some(Simple::Text(text)));
            }
            let rest = &bytes[self.pos + 1..];
            if rest.starts_with(b"![CDATA[") {
                let from = self.pos + 9;
                let end = self.cdata.end(from, self.just_opened.map(str::as_bytes))?;
                self.pos = end + 3;
                return Some(Some(Simple::CData(body.get(from..end)?)));
            }
            let closing = rest.first() == Some(&b'/');
            let name_start = usize::from(closing);
            let name_len = rest[name_start..]
                .iter()
                .position(|&b| !NAME_BYTE[usize::from(b)])?;
            if name_len == 0 || rest.get(name_start + name_len) != Some(&b'>') {
                return None;
            }
            let from = self.pos + 1 + name_start;
            let name = body.get(from..from + name_len)?;
            self.pos = from + name_len + 1;
            return Some(Some(if closing {
                Simple::End(name)
            } else {
                Simple::Start(name)
            }));
        }
    }
}

/// The fields of a body in the simple shape ([`SimpleTokens`]), built
/// exactly as [`parse_xml_general`] builds them; `None` outside the shape, for
/// mismatched or unclosed tags, text outside the root, or a limit reached, so
/// that the general parser reads the body and reports any error.
fn parse_xml_simple(body: &[u8], limits: &Limits) -> Option<Fields> {
    let mut tokens = SimpleTokens::new(body)?;
    let mut stack: Vec<Frame> = Vec::with_capacity(4);
    let mut root: Option<Fields> = None;
    let mut count = 0usize;
    while let Some(token) = tokens.next()? {
        if root.is_some() {
            // Only whitespace may follow the root element.
            return None;
        }
        match token {
            Simple::Text(text) => {
                append_text(stack.last_mut()?, Cow::Borrowed(text), limits).ok()?
            }
            Simple::CData(text) => {
                let frame = stack.last_mut()?;
                frame.cdata = true;
                append_text(frame, Cow::Borrowed(text), limits).ok()?;
            }
            Simple::Start(name) => {
                count += 1;
                if stack.len() >= limits.max_depth || count > limits.max_fields {
                    return None;
                }
                stack.push(Frame::new(Cow::Borrowed(name)));
            }
            Simple::End(name) => {
                let frame = stack.pop()?;
                if frame.name != name {
                    return None;
                }
                match stack.last_mut() {
                    Some(parent) => frame.into_parent(parent),
                    None => root = Some(frame.children),
                }
            }
        }
    }
    root
}

/// [`encrypt_of`] for a body in the simple shape, as [`encrypt_of_xml`]
/// reads it, without building the envelope's fields; `None` when the body
/// is not in the shape or is malformed (the general reader then decides).
fn encrypt_of_simple<'a>(body: &'a [u8], limits: &Limits) -> Option<Option<Cow<'a, str>>> {
    let mut tokens = SimpleTokens::new(body)?;
    let (mut depth, mut seen_root, mut in_encrypt) = (0usize, false, false);
    let mut count = 0usize;
    let mut encrypt: Option<Cow<'a, str>> = None;
    // The names of open elements, to check end tags as quick-xml does. An
    // envelope is two levels deep; deeper ones go to the general reader.
    let mut open: [&str; 8] = [""; 8];
    while let Some(token) = tokens.next()? {
        match token {
            Simple::Start(name) => {
                if depth == 0 && seen_root {
                    return None;
                }
                depth += 1;
                count += 1;
                seen_root = true;
                if depth > limits.max_depth || count > limits.max_fields {
                    return None;
                }
                *open.get_mut(depth - 1)? = name;
                if depth == 2 && name == "Encrypt" {
                    in_encrypt = true;
                    encrypt = Some(Cow::Borrowed(""));
                }
            }
            Simple::End(name) => {
                if depth == 0 || open[depth - 1] != name {
                    return None;
                }
                depth -= 1;
                in_encrypt = false;
            }
            Simple::Text(text) | Simple::CData(text) => {
                if depth == 0 {
                    return None;
                }
                if in_encrypt {
                    match encrypt.as_mut() {
                        Some(e) if e.is_empty() => *e = Cow::Borrowed(text),
                        Some(e) => e.to_mut().push_str(text),
                        None => {}
                    }
                }
            }
        }
    }
    (depth == 0 && seen_root).then_some(encrypt)
}

/// Check one more element, under `depth` open ones, against the depth and
/// field limits (`count` so far, this one added).
fn one_more_element(depth: usize, count: &mut usize, limits: &Limits) -> Result<(), WireError> {
    if depth >= limits.max_depth {
        return Err(WireError::TooDeep {
            max: limits.max_depth,
        });
    }
    *count += 1;
    if *count > limits.max_fields {
        return Err(WireError::TooManyFields {
            max: limits.max_fields,
        });
    }
    Ok(())
}

/// For the fuzz targets: panics when the simple reader accepts `body` and
/// reads it otherwise than the general parser, or when the simple
/// envelope reader finds another `Encrypt` than the general one.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn assert_xml_readers_agree(body: &[u8], limits: &Limits) {
    if let Some(simple) = parse_xml_simple(body, limits) {
        assert_eq!(
            Some(simple),
            parse_xml_general(body, limits).ok(),
            "fields of {body:?}"
        );
    }
    if let Some(simple) = encrypt_of_simple(body, limits) {
        let general = encrypt_of_xml(body, limits).ok();
        assert_eq!(
            simple.map(Cow::into_owned),
            general.flatten(),
            "Encrypt of {body:?}"
        );
    }
}

/// Any XML WeChat could send, read with quick-xml (WeChat's unsplit CDATA
/// split first, see [`CdataEnds`]).
fn parse_xml_general(body: &[u8], limits: &Limits) -> Result<Fields, WireError> {
    let split = split_unsplit_cdata(body);
    let body = split.as_deref().unwrap_or(body);
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Fields> = None;
    let mut count = 0usize;
    loop {
        let event = reader.read_event().map_err(WireError::Xml)?;
        match event {
            XmlEvent::Start(start) => {
                if root.is_some() {
                    return Err(WireError::XmlShape("content after the root element"));
                }
                one_more_element(stack.len(), &mut count, limits)?;
                let name = std::str::from_utf8(start.name().as_ref())
                    .map_err(WireError::Utf8)?
                    .to_owned();
                stack.push(Frame::new(Cow::Owned(name)));
            }
            XmlEvent::Empty(start) => {
                // `<a/>` is a field like `<a></a>`, and counts as one.
                one_more_element(stack.len(), &mut count, limits)?;
                let name = std::str::from_utf8(start.name().as_ref())
                    .map_err(WireError::Utf8)?
                    .to_owned();
                match stack.last_mut() {
                    Some(parent) => {
                        insert(&mut parent.children, name, Value::String(String::new()))
                    }
                    None if root.is_none() => root = Some(Fields::new()),
                    None => return Err(WireError::XmlShape("content after the root element")),
                }
            }
            XmlEvent::End(_) => {
                // quick-xml has already checked that the end tag matches.
                let Some(frame) = stack.pop() else {
                    return Err(WireError::XmlShape("end tag without a start tag"));
                };
                match stack.last_mut() {
                    Some(parent) => frame.into_parent(parent),
                    None => root = Some(frame.children),
                }
            }
            XmlEvent::Text(text) => {
                let Some(frame) = stack.last_mut() else {
                    return Err(WireError::XmlShape("text outside the root element"));
                };
                let text = text.unescape().map_err(WireError::Xml)?;
                append_text(frame, Cow::Owned(text.into_owned()), limits)?;
            }
            XmlEvent::CData(data) => {
                let Some(frame) = stack.last_mut() else {
                    return Err(WireError::XmlShape("CDATA outside the root element"));
                };
                let text = std::str::from_utf8(&data).map_err(WireError::Utf8)?;
                frame.cdata = true;
                append_text(frame, Cow::Owned(text.to_owned()), limits)?;
            }
            XmlEvent::DocType(_) => return Err(WireError::Doctype),
            XmlEvent::Decl(_) | XmlEvent::Comment(_) | XmlEvent::PI(_) => {}
            XmlEvent::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(WireError::XmlShape("unclosed element"));
    }
    root.ok_or(WireError::XmlShape("no root element"))
}

fn append_text<'a>(
    frame: &mut Frame<'a>,
    text: Cow<'a, str>,
    limits: &Limits,
) -> Result<(), WireError> {
    let len = frame.text.len() + text.len();
    if len > limits.max_field {
        return Err(WireError::FieldTooLarge {
            name: frame.name.clone().into_owned(),
            len,
            max: limits.max_field,
        });
    }
    if frame.text.is_empty() {
        frame.text = text;
    } else {
        frame.text.to_mut().push_str(&text);
    }
    Ok(())
}

/// Write fields as WeChat's XML: `<xml>` root, strings in CDATA, numbers bare,
/// objects as nested elements and arrays as repeated elements.
pub fn write_xml(fields: &Fields) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<xml>");
    for (name, value) in fields {
        write_xml_value(&mut out, name, value);
    }
    out.push_str("</xml>");
    out
}

fn write_xml_value(out: &mut String, name: &str, value: &Value) {
    if let Value::Array(items) = value {
        for item in items {
            write_xml_value(out, name, item);
        }
        return;
    }
    out.push('<');
    out.push_str(name);
    out.push('>');
    match value {
        Value::String(s) => push_cdata(out, s),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Object(map) => {
            for (n, v) in map {
                write_xml_value(out, n, v);
            }
        }
        Value::Null | Value::Array(_) => {}
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// CDATA cannot hold `]]>`: split it across two sections, as XML requires.
fn push_cdata(out: &mut String, text: &str) {
    out.push_str("<![CDATA[");
    out.push_str(&text.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// XML-ish documents mixing the simple shape with everything outside it.
    fn document() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec![
            "xml",
            "A",
            "B",
            "Content",
            "MsgId",
            "a-b",
            "x:y",
            "1a",
            "List",
            "A b=\"1\"",
            "Encrypt",
            "Encrypt",
        ]);
        let text = prop::sample::select(vec![
            "",
            " ",
            "\n  ",
            "hello",
            "123",
            "007",
            "-5",
            "1.5",
            "1e3",
            "23.50",
            "a&amp;b",
            "&lt;",
            "你好",
            " x y ",
            "\r\n",
            ">",
            "\t9\t",
            "18446744073709551616",
        ]);
        // The last ones are WeChat's unsplit sections (a text holding `]]>`).
        let cdata = prop::sample::select(vec![
            "",
            " padded ",
            "<b>",
            "]]",
            "12",
            "你",
            "a]]>b",
            "<b><![CDATA[x]]></b>",
            "]]><![CDATA[",
            "x]]></Other>",
        ]);
        let leaf = prop_oneof![
            6 => text.prop_map(str::to_owned),
            3 => cdata.prop_map(|c| format!("<![CDATA[{c}]]>")),
            1 => Just("<!-- c -->".to_owned()),
            1 => Just("<E/>".to_owned()),
        ];
        let element = leaf.prop_recursive(4, 48, 6, move |inner| {
            (
                name.clone(),
                prop::collection::vec(inner, 0..6),
                prop::bool::weighted(0.05),
            )
                .prop_map(|(name, children, mismatch)| {
                    let close = if mismatch {
                        "Other"
                    } else {
                        name.split(' ').next().unwrap_or(name)
                    };
                    format!("<{name}>{}</{close}>", children.concat())
                })
        });
        let before = prop::sample::select(vec![
            "",
            " ",
            "\n",
            "<?xml version=\"1.0\"?>",
            "x",
            "<!DOCTYPE x>",
        ]);
        let after = prop::sample::select(vec!["", "\n", " ", "<a></a>", "x"]);
        (before, element, after).prop_map(|(b, e, a)| format!("{b}<xml>{e}</xml>{a}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the simple reader accepts, it reads exactly as the
        /// general parser does.
        #[test]
        fn the_simple_reader_agrees_with_the_general_parser(doc in document()) {
            let limits = Limits { max_field: 64, max_fields: 24, ..Limits::default() };
            if let Some(simple) = parse_xml_simple(doc.as_bytes(), &limits) {
                prop_assert_eq!(Some(simple), parse_xml_general(doc.as_bytes(), &limits).ok(), "{}", doc);
            }
        }

        /// Both readers count every element against the field limit, empty
        /// ones (`<b/>`, read by quick-xml only) as much as `<b></b>` (read
        /// by the simple reader).
        #[test]
        fn both_readers_count_every_element(full in 0usize..40, empty in 0usize..40) {
            let limits = Limits { max_fields: 30, ..Limits::default() };
            let over = 1 + full + empty > limits.max_fields;
            let self_closing = format!("<xml>{}{}</xml>", "<a>1</a>".repeat(full), "<b/>".repeat(empty));
            let open_close = format!("<xml>{}{}</xml>", "<a>1</a>".repeat(full), "<b></b>".repeat(empty));
            for doc in [&self_closing, &open_close] {
                let result = parse_xml(doc.as_bytes(), &limits);
                prop_assert_eq!(
                    matches!(result, Err(WireError::TooManyFields { .. })),
                    over,
                    "{}", doc
                );
                prop_assert_eq!(
                    matches!(encrypt_of(Format::Xml, doc.as_bytes(), &limits), Err(WireError::TooManyFields { .. })),
                    over,
                    "{}", doc
                );
            }
        }

        /// `Encrypt` read through the simple reader is what the general
        /// reader finds, and every error is the general reader's.
        #[test]
        fn encrypt_of_agrees_with_the_general_reader(doc in document()) {
            let limits = Limits { max_field: 64, max_fields: 24, ..Limits::default() };
            let fast = encrypt_of(Format::Xml, doc.as_bytes(), &limits)
                .map(|e| e.map(Cow::into_owned))
                .map_err(|e| e.to_string());
            let general = encrypt_of_xml(doc.as_bytes(), &limits).map_err(|e| e.to_string());
            prop_assert_eq!(fast, general, "{}", doc);
        }
    }

    #[test]
    fn envelopes_take_the_simple_path() {
        let envelope = b"<xml>\n <ToUserName><![CDATA[gh_1]]></ToUserName>\n <Encrypt><![CDATA[abc+/=]]></Encrypt>\n</xml>\n";
        assert_eq!(
            encrypt_of_simple(envelope, &Limits::default()),
            Some(Some(Cow::Borrowed("abc+/=")))
        );
        assert_eq!(
            encrypt_of_simple(b"<xml><A>1</A></xml>", &Limits::default()),
            Some(None)
        );
        // Outside the shape: the general reader decides.
        assert_eq!(
            encrypt_of_simple(b"<xml><!-- x --></xml>", &Limits::default()),
            None
        );
    }

    #[test]
    fn every_xml_fixture_takes_the_simple_path() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/messages");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "xml") {
                let body = std::fs::read(&path).unwrap();
                let simple = parse_xml_simple(&body, &Limits::default());
                assert!(simple.is_some(), "{}", path.display());
                assert_eq!(simple, parse_xml_general(&body, &Limits::default()).ok());
                n += 1;
            }
        }
        assert!(n > 30, "{n} fixtures");
    }

    fn xml(s: &str) -> Result<Fields, WireError> {
        parse_xml(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn cdata_is_string_bare_number_is_number() {
        let f = xml(
            "<xml><A><![CDATA[12]]></A><B>12</B><C>007</C><D>-3</D><E>23.5</E><F>23.50</F></xml>",
        )
        .unwrap();
        assert_eq!(f["A"], Value::String("12".into()));
        assert_eq!(f["B"], Value::from(12u64));
        assert_eq!(f["C"], Value::String("007".into()));
        assert_eq!(f["D"], Value::from(-3i64));
        assert_eq!(f["E"], Value::from(23.5));
        assert_eq!(f["F"], Value::String("23.50".into()));
    }

    #[test]
    fn json_integers_wider_than_64_bits_keep_their_digits() {
        let body = br#"{"A":123456789012345678901234,"B":-99999999999999999999,"C":"x\"9","D":1.5,"E":18446744073709551615,"F":[1e3,340282366920938463463374607431768211456]}"#;
        let fields = parse_json(body, &Limits::default()).unwrap();
        assert_eq!(fields["A"], "123456789012345678901234");
        assert_eq!(fields["B"], "-99999999999999999999");
        assert_eq!(fields["C"], "x\"9");
        assert_eq!(fields["D"], 1.5);
        assert_eq!(fields["E"], u64::MAX);
        assert_eq!(fields["F"][1], "340282366920938463463374607431768211456");
        // A body at the size limit is not refused for the quotes added.
        let wide = r#"{"W":123456789012345678901234,"P":""#;
        let body = format!("{wide}{}\"}}", "x".repeat(1000 - wide.len() - 2));
        let limits = Limits {
            max_body: body.len(),
            ..Limits::default()
        };
        assert_eq!(
            parse_json(body.as_bytes(), &limits).unwrap()["W"],
            "123456789012345678901234"
        );
    }

    #[test]
    fn msg_id_above_2_pow_53_is_exact() {
        let f = xml("<xml><MsgId>6054768590064713728</MsgId></xml>").unwrap();
        assert_eq!(f["MsgId"].as_u64(), Some(6054768590064713728));
    }

    #[test]
    fn repeated_elements_become_an_array_and_nesting_an_object() {
        let f = xml("<xml><W><List><A>1</A></List><List><A>2</A></List></W><E/></xml>").unwrap();
        assert_eq!(f["W"]["List"][1]["A"], Value::from(2u64));
        assert_eq!(f["E"], Value::String(String::new()));
    }

    #[test]
    fn unsplit_cdata_is_read_as_wechat_meant_it() {
        let meant = "see <b><![CDATA[x]]></b> here";
        let body = format!(
            "<xml><ToUserName><![CDATA[gh]]></ToUserName><Content><![CDATA[{meant}]]></Content>\n<MsgId>1</MsgId></xml>"
        );
        let fields = xml(&body).unwrap();
        assert_eq!(fields["Content"], meant);
        assert_eq!(fields["MsgId"], 1);
        // Both readers read it so.
        let simple = parse_xml_simple(body.as_bytes(), &Limits::default()).unwrap();
        let general = parse_xml_general(body.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(simple, general);
        assert_eq!(simple, fields);
        // Several `]]>` in one text, white space before the end tag, and a
        // `]]>` at the very end of the text.
        for meant in ["a]]>b]]>c", "x]]>", "]]>", "<![CDATA[ ]]> ]]>"] {
            let body = format!("<xml><Content><![CDATA[{meant}]]>  </Content></xml>");
            assert_eq!(xml(&body).unwrap()["Content"], meant, "{body}");
        }
        // The envelope of a compatible-mode push carries the text too.
        let envelope = format!(
            "<xml><Content><![CDATA[{meant}]]></Content><Encrypt><![CDATA[abc=]]></Encrypt></xml>"
        );
        let encrypt = encrypt_of(Format::Xml, envelope.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(encrypt.as_deref(), Some("abc="));
    }

    #[test]
    fn many_sections_that_look_unsplit_are_read_from_one_index() {
        // Once a scan of the rest of the body per section: quadratic, and
        // reachable without a signature (see the hostile_cdata bench).
        let body = format!("<xml>{}</xml>", "<a><![CDATA[x]]>z</a>".repeat(2000));
        let mut ends = CdataEnds::new(body.as_bytes());
        let mut from = 0;
        let mut sections = 0;
        while let Some(found) = memchr::memmem::find(&body.as_bytes()[from..], b"<![CDATA[") {
            let content = from + found + 9;
            let end = ends.end(content, Some(b"a")).unwrap();
            // No `]]>` here is followed by `</a>`: each ends at its first.
            assert_eq!(&body[content..end], "x");
            from = end + 3;
            sections += 1;
        }
        assert_eq!(sections, 2000);
        assert!(ends.index.is_some());
        // The readers agree on such a body.
        let limits = Limits {
            max_fields: 10_000,
            ..Limits::default()
        };
        let simple = parse_xml_simple(body.as_bytes(), &limits);
        let general = parse_xml_general(body.as_bytes(), &limits).ok();
        assert_eq!(simple, general);
    }

    #[test]
    fn json_envelopes_are_bounded_in_depth_like_xml_ones() {
        let deep = format!(
            "{{\"Encrypt\":\"e\",\"X\":{}1{}}}",
            "{\"a\":".repeat(20),
            "}".repeat(20)
        );
        assert!(matches!(
            encrypt_of(Format::Json, deep.as_bytes(), &Limits::default()),
            Err(WireError::TooDeep { max: 16 })
        ));
        // Braces inside strings are text.
        let text = format!(
            "{{\"Encrypt\":\"{}\\\"{}\"}}",
            "{".repeat(40),
            "}".repeat(40)
        );
        assert!(encrypt_of(Format::Json, text.as_bytes(), &Limits::default()).is_ok());
        let ok = r#"{"ToUserName":"gh","Encrypt":"abc="}"#;
        assert_eq!(
            encrypt_of(Format::Json, ok.as_bytes(), &Limits::default())
                .unwrap()
                .as_deref(),
            Some("abc=")
        );
    }

    #[test]
    fn self_closing_elements_count_against_the_field_limit() {
        let limits = Limits {
            max_fields: 100,
            ..Limits::default()
        };
        let empties = format!("<xml>{}</xml>", "<a/>".repeat(200));
        assert!(matches!(
            parse_xml(empties.as_bytes(), &limits),
            Err(WireError::TooManyFields { max: 100 })
        ));
        let mixed = format!("<xml>{}{}</xml>", "<a></a>".repeat(60), "<b/>".repeat(60));
        assert!(matches!(
            parse_xml(mixed.as_bytes(), &limits),
            Err(WireError::TooManyFields { .. })
        ));
        // Envelopes are read for Encrypt alone, but bounded alike.
        let envelope = format!("<xml><Encrypt>e</Encrypt>{}</xml>", "<a/>".repeat(200));
        assert!(matches!(
            encrypt_of(Format::Xml, envelope.as_bytes(), &limits),
            Err(WireError::TooManyFields { .. })
        ));
        let envelope = format!("<xml><Encrypt>e</Encrypt>{}</xml>", "<a>1</a>".repeat(200));
        assert!(matches!(
            encrypt_of(Format::Xml, envelope.as_bytes(), &limits),
            Err(WireError::TooManyFields { .. })
        ));
        // Nested empty elements count against depth too.
        let deep = format!("<xml>{}<e/>{}</xml>", "<a>".repeat(15), "</a>".repeat(15));
        assert!(matches!(
            parse_xml(deep.as_bytes(), &Limits::default()),
            Err(WireError::TooDeep { .. })
        ));
    }

    #[test]
    fn well_formed_split_cdata_is_not_rewritten_and_doctype_stays_refused() {
        let split = "<xml><Content><![CDATA[a]]]]><![CDATA[>b]]></Content></xml>";
        assert_eq!(xml(split).unwrap()["Content"], "a]]>b");
        let doctype = "<!DOCTYPE x [<!ENTITY e \"v\">]><xml><Content><![CDATA[a<![CDATA[b]]>c]]></Content></xml>";
        assert!(matches!(xml(doctype), Err(WireError::Doctype)));
        // Still malformed when no end tag follows any `]]>`.
        assert!(xml("<xml><Content><![CDATA[a]]>b</xml>").is_err());
    }

    #[test]
    fn doctype_and_entities_are_refused() {
        let bomb =
            r#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaa">]><xml><A>&a;</A></xml>"#;
        assert!(matches!(xml(bomb), Err(WireError::Doctype)));
        // An undeclared entity is an error, not an empty string.
        assert!(matches!(
            xml("<xml><A>&a;</A></xml>"),
            Err(WireError::Xml(_))
        ));
        // The predefined ones are fine.
        assert_eq!(xml("<xml><A>a&amp;b</A></xml>").unwrap()["A"], "a&b");
    }

    #[test]
    fn depth_field_size_and_body_size_are_bounded() {
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(40), "</a>".repeat(40));
        assert!(matches!(xml(&deep), Err(WireError::TooDeep { .. })));
        let limits = Limits {
            max_field: 8,
            ..Limits::default()
        };
        let err = parse_xml(b"<xml><Content>123456789</Content></xml>", &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field Content is 9 bytes, over the limit of 8"
        );
        let err = parse_json(br#"{"Content":"123456789"}"#, &limits).unwrap_err();
        assert!(matches!(err, WireError::FieldTooLarge { .. }));
        let limits = Limits {
            max_body: 4,
            ..Limits::default()
        };
        assert!(matches!(
            parse_json(b"{\"a\":1}", &limits),
            Err(WireError::BodyTooLarge { len: 7, max: 4 })
        ));
        let deep_json = format!("{{\"a\":{}1{}}}", "[{\"b\":".repeat(30), "}]".repeat(30));
        assert!(matches!(
            parse_json(deep_json.as_bytes(), &Limits::default()),
            Err(WireError::TooDeep { .. })
        ));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for bad in [
            "",
            "   ",
            "<xml>",
            "<xml></yml>",
            "text",
            "<xml></xml><xml></xml>",
            "<xml>a</xml>b",
        ] {
            assert!(xml(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            parse_json(b"[1]", &Limits::default()),
            Err(WireError::NotAnObject)
        ));
        assert!(parse_json(b"{\"a\":1,}", &Limits::default()).is_err());
    }

    #[test]
    fn write_xml_round_trips() {
        let mut f =
            xml("<xml><N>5</N><W><L><B>1</B></L><L><B><![CDATA[2]]></B></L></W></xml>").unwrap();
        // `]]>` cannot stand inside one CDATA section: it must be split.
        f.insert("A".into(), "x]]>y <&>".into());
        let written = write_xml(&f);
        assert_eq!(xml(&written).unwrap(), f);
    }

    #[test]
    fn encrypt_of_reads_only_encrypt_and_checks_the_rest() {
        let l = Limits::default();
        let xml = b"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[abc+/=]]></Encrypt></xml>";
        assert_eq!(
            encrypt_of(Format::Xml, xml, &l).unwrap().as_deref(),
            Some("abc+/=")
        );
        let plain = b"<xml><Content><![CDATA[hi]]></Content><X><Encrypt>nested</Encrypt></X></xml>";
        assert_eq!(encrypt_of(Format::Xml, plain, &l).unwrap(), None);
        let json = br#"{"ToUserName":"gh","Encrypt":"abc","Deep":{"a":[1]}}"#;
        assert_eq!(
            encrypt_of(Format::Json, json, &l).unwrap().as_deref(),
            Some("abc")
        );
        for bad in [
            &b"<!DOCTYPE x><xml/>"[..],
            b"<xml><Encrypt>a</Encrypt>",
            b"<xml/><xml/>",
            b"x<xml/>",
        ] {
            assert!(
                encrypt_of(Format::Xml, bad, &l).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(encrypt_of(Format::Json, br#"{"Encrypt":5}"#, &l).is_err());
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(40), "</a>".repeat(40));
        assert!(matches!(
            encrypt_of(Format::Xml, deep.as_bytes(), &l),
            Err(WireError::TooDeep { .. })
        ));
    }

    #[test]
    fn sniff_format() {
        assert_eq!(sniff(b"  <xml/>"), Some(Format::Xml));
        assert_eq!(sniff(b"\n{}"), Some(Format::Json));
        assert_eq!(sniff(b"x"), None);
    }
}
