//! The subset of RFC 8941 structured fields used by the reference (spec 03 §12).
//!
//! Parsing is total: every function here returns an error on malformed input and never
//! panics, whatever bytes it is given (they come from the network). The parser follows
//! the reference's leniencies: dictionary keys may contain upper-case letters (the
//! `ao-ids` header needs it), integers are limited to 15 digits and decimals to 12
//! integer and 3 fraction digits, strings accept only bytes 0x20–0x7E.
//!
//! Serialisation follows the reference too: strings are escaped (`\` and `"`) but not
//! validated, integers are written without a length check.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use thiserror::Error;

/// A parse error, with the byte offset where it was detected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("structured field parse error at byte {pos}: {reason}")]
pub struct SfError {
    /// Offset into the input.
    pub pos: usize,
    /// What was expected or found.
    pub reason: &'static str,
}

/// A bare item (RFC 8941 §3.3).
#[derive(Debug, Clone, PartialEq)]
pub enum BareItem {
    /// An integer (at most 15 digits when parsed).
    Integer(i64),
    /// A decimal.
    Decimal(f64),
    /// A string. Parsed strings are printable ASCII; serialised ones may hold any byte.
    String(Vec<u8>),
    /// A token.
    Token(String),
    /// A byte sequence (`:base64:`).
    ByteSeq(Vec<u8>),
    /// A boolean (`?1` / `?0`).
    Boolean(bool),
}

impl BareItem {
    /// A string item from text.
    pub fn string(s: impl Into<Vec<u8>>) -> BareItem {
        BareItem::String(s.into())
    }

    /// The text of a string or token item.
    pub fn as_text(&self) -> Option<&[u8]> {
        match self {
            BareItem::String(s) => Some(s),
            BareItem::Token(t) => Some(t.as_bytes()),
            _ => None,
        }
    }
}

/// Parameters: ordered key/value pairs (keys are unique).
pub type Parameters = Vec<(String, BareItem)>;

/// An item with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The value.
    pub bare: BareItem,
    /// Its parameters.
    pub params: Parameters,
}

impl Item {
    /// An item without parameters.
    pub fn new(bare: BareItem) -> Item {
        Item {
            bare,
            params: Vec::new(),
        }
    }
}

/// A member of a list or a dictionary: an item or an inner list.
#[derive(Debug, Clone, PartialEq)]
pub enum Member {
    /// A single item.
    Item(Item),
    /// An inner list `( a b c );params`.
    InnerList(Vec<Item>, Parameters),
}

/// A list (RFC 8941 §3.1).
pub type List = Vec<Member>;

/// A dictionary (RFC 8941 §3.2): ordered, keys unique (a later duplicate replaces the
/// earlier value in place).
pub type Dictionary = Vec<(String, Member)>;

// ---------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------

const MAX_INT_DIGITS: usize = 15;
const MAX_DEC_INT_DIGITS: usize = 12;
const MAX_DEC_FRAC_DIGITS: usize = 3;

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Self {
        Parser { input, pos: 0 }
    }

    fn err<T>(&self, reason: &'static str) -> Result<T, SfError> {
        Err(SfError {
            pos: self.pos,
            reason,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn finish(&mut self) -> Result<(), SfError> {
        self.skip_sp();
        if self.at_end() {
            Ok(())
        } else {
            self.err("trailing characters")
        }
    }

    fn list(&mut self) -> Result<List, SfError> {
        let mut out = Vec::new();
        while !self.at_end() {
            out.push(self.member()?);
            self.skip_ows();
            if self.at_end() {
                return Ok(out);
            }
            if self.peek() != Some(b',') {
                return self.err("expected `,` in list");
            }
            self.pos += 1;
            self.skip_ows();
            if self.at_end() {
                return self.err("trailing comma in list");
            }
        }
        Ok(out)
    }

    fn dictionary(&mut self) -> Result<Dictionary, SfError> {
        let mut out: Dictionary = Vec::new();
        while !self.at_end() {
            let key = self.dict_key()?;
            let member = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.member()?
            } else {
                let params = self.parameters()?;
                Member::Item(Item {
                    bare: BareItem::Boolean(true),
                    params,
                })
            };
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = member,
                None => out.push((key, member)),
            }
            self.skip_ows();
            if self.at_end() {
                return Ok(out);
            }
            if self.peek() != Some(b',') {
                return self.err("expected `,` in dictionary");
            }
            self.pos += 1;
            self.skip_ows();
            if self.at_end() {
                return self.err("trailing comma in dictionary");
            }
        }
        Ok(out)
    }

    fn member(&mut self) -> Result<Member, SfError> {
        if self.peek() == Some(b'(') {
            self.inner_list()
        } else {
            Ok(Member::Item(self.item()?))
        }
    }

    fn inner_list(&mut self) -> Result<Member, SfError> {
        // Caller checked the `(`.
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_sp();
            match self.peek() {
                None => return self.err("unterminated inner list"),
                Some(b')') => {
                    self.pos += 1;
                    let params = self.parameters()?;
                    return Ok(Member::InnerList(items, params));
                }
                Some(_) => {
                    items.push(self.item()?);
                    if !matches!(self.peek(), Some(b' ' | b')')) {
                        return self.err("expected space or `)` in inner list");
                    }
                }
            }
        }
    }

    fn item(&mut self) -> Result<Item, SfError> {
        let bare = self.bare_item()?;
        let params = self.parameters()?;
        Ok(Item { bare, params })
    }

    fn parameters(&mut self) -> Result<Parameters, SfError> {
        let mut out: Parameters = Vec::new();
        while self.peek() == Some(b';') {
            self.pos += 1;
            self.skip_sp();
            let key = self.param_key()?;
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.bare_item()?
            } else {
                BareItem::Boolean(true)
            };
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => out.push((key, value)),
            }
        }
        Ok(out)
    }

    fn param_key(&mut self) -> Result<String, SfError> {
        match self.peek() {
            Some(c) if c.is_ascii_lowercase() || c == b'*' => {}
            _ => return self.err("expected parameter key"),
        }
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'-' | b'.' | b'*')
            {
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(ascii_string(&self.input[start..self.pos]))
    }

    fn dict_key(&mut self) -> Result<String, SfError> {
        match self.peek() {
            Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'*' | b'%' | b'_' | b'-') => {}
            _ => return self.err("expected dictionary key"),
        }
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'*' | b'%') {
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(ascii_string(&self.input[start..self.pos]))
    }

    fn bare_item(&mut self) -> Result<BareItem, SfError> {
        match self.peek() {
            Some(b'-') => self.number(),
            Some(c) if c.is_ascii_digit() => self.number(),
            Some(b'"') => self.string(),
            Some(b':') => self.byte_seq(),
            Some(b'?') => self.boolean(),
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => self.token(),
            Some(_) => self.err("unexpected character for an item"),
            None => self.err("expected an item"),
        }
    }

    fn number(&mut self) -> Result<BareItem, SfError> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let int_digits = self.pos - int_start;
        if int_digits == 0 {
            return self.err("expected a digit");
        }
        if self.peek() != Some(b'.') {
            if int_digits > MAX_INT_DIGITS {
                return self.err("integer has more than 15 digits");
            }
            let mut v: i64 = 0;
            for &d in &self.input[int_start..self.pos] {
                v = v * 10 + i64::from(d - b'0');
            }
            return Ok(BareItem::Integer(if negative { -v } else { v }));
        }
        if int_digits > MAX_DEC_INT_DIGITS {
            return self.err("decimal has more than 12 integer digits");
        }
        self.pos += 1;
        let frac_start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let frac_digits = self.pos - frac_start;
        if frac_digits == 0 {
            return self.err("decimal ends with `.`");
        }
        if frac_digits > MAX_DEC_FRAC_DIGITS {
            return self.err("decimal has more than 3 fraction digits");
        }
        // Digits and one dot only, so this is valid UTF-8 and a valid float literal.
        let text = std::str::from_utf8(&self.input[int_start..self.pos]).map_err(|_| SfError {
            pos: int_start,
            reason: "bad decimal",
        })?;
        let v: f64 = text.parse().map_err(|_| SfError {
            pos: int_start,
            reason: "bad decimal",
        })?;
        Ok(BareItem::Decimal(if negative { -v } else { v }))
    }

    fn string(&mut self) -> Result<BareItem, SfError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(BareItem::String(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        _ => return self.err("bad escape in string"),
                    }
                }
                Some(c @ 0x20..=0x7e) => {
                    out.push(c);
                    self.pos += 1;
                }
                Some(_) => return self.err("invalid character in string"),
            }
        }
    }

    fn token(&mut self) -> Result<BareItem, SfError> {
        let start = self.pos;
        self.pos += 1;
        while self
            .peek()
            .is_some_and(|c| is_tchar(c) || c == b':' || c == b'/')
        {
            self.pos += 1;
        }
        Ok(BareItem::Token(ascii_string(&self.input[start..self.pos])))
    }

    fn byte_seq(&mut self) -> Result<BareItem, SfError> {
        self.pos += 1;
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
        {
            self.pos += 1;
        }
        if self.peek() != Some(b':') {
            return self.err("unterminated byte sequence");
        }
        let text = &self.input[start..self.pos];
        self.pos += 1;
        let decoded = STANDARD
            .decode(text)
            .or_else(|_| STANDARD_NO_PAD.decode(text))
            .map_err(|_| SfError {
                pos: start,
                reason: "bad base64 in byte sequence",
            })?;
        Ok(BareItem::ByteSeq(decoded))
    }

    fn boolean(&mut self) -> Result<BareItem, SfError> {
        self.pos += 1;
        let v = match self.peek() {
            Some(b'1') => true,
            Some(b'0') => false,
            _ => return self.err("expected `1` or `0` after `?`"),
        };
        self.pos += 1;
        Ok(BareItem::Boolean(v))
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Bytes already checked to be ASCII.
fn ascii_string(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// Parses a whole field value as a list.
pub fn parse_list(input: &[u8]) -> Result<List, SfError> {
    let mut p = Parser::new(input);
    p.skip_sp();
    let out = p.list()?;
    p.finish()?;
    Ok(out)
}

/// Parses a whole field value as a dictionary.
pub fn parse_dictionary(input: &[u8]) -> Result<Dictionary, SfError> {
    let mut p = Parser::new(input);
    p.skip_sp();
    let out = p.dictionary()?;
    p.finish()?;
    Ok(out)
}

/// Parses a whole field value as a single item (with parameters).
pub fn parse_item(input: &[u8]) -> Result<Item, SfError> {
    let mut p = Parser::new(input);
    p.skip_sp();
    let out = p.item()?;
    p.finish()?;
    Ok(out)
}

/// Parses a bare item only (no parameters, nothing after it).
pub fn parse_bare_item(input: &[u8]) -> Result<BareItem, SfError> {
    let mut p = Parser::new(input);
    let out = p.bare_item()?;
    if !p.at_end() {
        return p.err("trailing characters");
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Serialisation
// ---------------------------------------------------------------------------------

/// Appends a string item: `"` + content with `\` and `"` escaped + `"`. No validation
/// (as in the reference).
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut rest = s;
    while let Some(i) = rest.iter().position(|&c| c == b'"' || c == b'\\') {
        out.extend_from_slice(&rest[..i]);
        out.push(b'\\');
        out.push(rest[i]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// A string item as bytes (see [`write_string`]).
pub fn string_item(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    write_string(&mut out, s);
    out
}

fn write_decimal(out: &mut Vec<u8>, v: f64) {
    // Round to three fraction digits, then drop trailing zeros (keeping one digit).
    let mut text = format!("{:.3}", v);
    while text.ends_with('0') && !text.ends_with(".0") {
        text.pop();
    }
    out.extend_from_slice(text.as_bytes());
}

/// Appends a bare item.
pub fn write_bare_item(out: &mut Vec<u8>, item: &BareItem) {
    match item {
        BareItem::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        BareItem::Decimal(d) => write_decimal(out, *d),
        BareItem::String(s) => write_string(out, s),
        BareItem::Token(t) => out.extend_from_slice(t.as_bytes()),
        BareItem::ByteSeq(b) => {
            out.push(b':');
            out.extend_from_slice(STANDARD.encode(b).as_bytes());
            out.push(b':');
        }
        BareItem::Boolean(b) => out.extend_from_slice(if *b { b"?1" } else { b"?0" }),
    }
}

/// Appends parameters: `;key` for true, `;key=value` otherwise.
pub fn write_parameters(out: &mut Vec<u8>, params: &Parameters) {
    for (k, v) in params {
        out.push(b';');
        out.extend_from_slice(k.as_bytes());
        if *v != BareItem::Boolean(true) {
            out.push(b'=');
            write_bare_item(out, v);
        }
    }
}

/// Appends an item with its parameters.
pub fn write_item(out: &mut Vec<u8>, item: &Item) {
    write_bare_item(out, &item.bare);
    write_parameters(out, &item.params);
}

/// Appends a list or dictionary member.
pub fn write_member(out: &mut Vec<u8>, m: &Member) {
    match m {
        Member::Item(i) => write_item(out, i),
        Member::InnerList(items, params) => {
            out.push(b'(');
            for (n, i) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b' ');
                }
                write_item(out, i);
            }
            out.push(b')');
            write_parameters(out, params);
        }
    }
}

/// Serialises a list (members joined by `", "`).
pub fn serialize_list(list: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, m) in list.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b", ");
        }
        write_member(&mut out, m);
    }
    out
}

/// Serialises a dictionary (`key=value` joined by `", "`; always the `key=` form, so a
/// boolean true is written `key=?1`, as the reference does).
pub fn serialize_dictionary(dict: &[(String, Member)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, (k, m)) in dict.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        write_member(&mut out, m);
    }
    out
}

/// Serialises one item with its parameters.
pub fn serialize_item(item: &Item) -> Vec<u8> {
    let mut out = Vec::new();
    write_item(&mut out, item);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(x: &str) -> BareItem {
        BareItem::string(x)
    }

    #[test]
    fn sf_items() {
        assert_eq!(parse_bare_item(b"42").unwrap(), BareItem::Integer(42));
        assert_eq!(parse_bare_item(b"-7").unwrap(), BareItem::Integer(-7));
        assert_eq!(
            parse_bare_item(b"999999999999999").unwrap(),
            BareItem::Integer(999_999_999_999_999)
        );
        assert!(parse_bare_item(b"1234567890123456").is_err());
        assert_eq!(parse_bare_item(b"1.5").unwrap(), BareItem::Decimal(1.5));
        assert!(parse_bare_item(b"1.5555").is_err());
        assert!(parse_bare_item(b"1234567890123.5").is_err());
        assert!(parse_bare_item(b"1.").is_err());
        assert_eq!(parse_bare_item(br#""a\"b\\c""#).unwrap(), s("a\"b\\c"));
        assert!(parse_bare_item(b"\"\xc3\xbc\"").is_err());
        assert!(parse_bare_item(br#""a\nb""#).is_err());
        assert_eq!(
            parse_bare_item(b"foo/bar:1").unwrap(),
            BareItem::Token("foo/bar:1".into())
        );
        assert_eq!(
            parse_bare_item(b"*x").unwrap(),
            BareItem::Token("*x".into())
        );
        assert_eq!(
            parse_bare_item(b":aGVsbG8=:").unwrap(),
            BareItem::ByteSeq(b"hello".to_vec())
        );
        assert_eq!(parse_bare_item(b"?1").unwrap(), BareItem::Boolean(true));
        assert_eq!(parse_bare_item(b"?0").unwrap(), BareItem::Boolean(false));
        assert!(parse_bare_item(b"?2").is_err());
        assert!(parse_bare_item(b"").is_err());
    }

    #[test]
    fn sf_item_params() {
        let i = parse_item(b"multipart/form-data; boundary=\"abc\"").unwrap();
        assert_eq!(i.params, vec![("boundary".to_string(), s("abc"))]);
        assert!(parse_item(b"a ;b").is_err());
        let i = parse_item(b"text/plain;charset=utf-8;q").unwrap();
        assert_eq!(i.bare, BareItem::Token("text/plain".into()));
        assert_eq!(
            i.params,
            vec![
                ("charset".to_string(), BareItem::Token("utf-8".into())),
                ("q".to_string(), BareItem::Boolean(true))
            ]
        );
        assert!(parse_item(b"a;B=1").is_err());
    }

    #[test]
    fn sf_lists() {
        let l = parse_list(br#""x", "(ao-type-integer) 2""#).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(serialize_list(&l), br#""x", "(ao-type-integer) 2""#);
        assert_eq!(parse_list(b"").unwrap(), vec![]);
        assert!(parse_list(b"a,").is_err());
        assert!(parse_list(b"a b").is_err());
        let l = parse_list(b"(\"a\" \"b\");x=1, c").unwrap();
        assert_eq!(
            l[0],
            Member::InnerList(
                vec![Item::new(s("a")), Item::new(s("b"))],
                vec![("x".into(), BareItem::Integer(1))]
            )
        );
        assert_eq!(serialize_list(&l), b"(\"a\" \"b\");x=1, c");
    }

    #[test]
    fn sf_dictionaries() {
        let d = parse_dictionary(br#"age="integer", empty="empty-binary", tags="list""#).unwrap();
        assert_eq!(d[0], ("age".into(), Member::Item(Item::new(s("integer")))));
        assert_eq!(d.len(), 3);
        assert_eq!(
            serialize_dictionary(&d),
            br#"age="integer", empty="empty-binary", tags="list""#
        );
        // Upper-case keys are accepted (ao-ids).
        let d = parse_dictionary(br#"IYkkrqlZNW_J-4T-5eFApZOMRl5P4VjvrcOXWvIqB1Q="v""#).unwrap();
        assert_eq!(d[0].0, "IYkkrqlZNW_J-4T-5eFApZOMRl5P4VjvrcOXWvIqB1Q");
        // Bare keys are true; parameters kept.
        let d = parse_dictionary(b"a, b=2;x").unwrap();
        assert_eq!(d[0].1, Member::Item(Item::new(BareItem::Boolean(true))));
        assert_eq!(serialize_dictionary(&d), b"a=?1, b=2;x");
        // Escaped keys.
        let d = parse_dictionary(b"%41=\"integer\", 1=\"list\"").unwrap();
        assert_eq!(d[0].0, "%41");
        assert!(parse_dictionary(b"a=1,").is_err());
        assert!(parse_dictionary(b"=1").is_err());
        let d =
            parse_dictionary(b"sig=(\"a\" \"@path\");alg=\"rsa-pss-sha512\";keyid=\"k\"").unwrap();
        assert!(matches!(&d[0].1, Member::InnerList(items, p) if items.len() == 2 && p.len() == 2));
    }

    #[test]
    fn sf_string_serialisation_escapes() {
        assert_eq!(string_item(b"a\"b\\c"), br#""a\"b\\c""#);
        assert_eq!(string_item("ü".as_bytes()), "\"ü\"".as_bytes());
    }

    proptest! {
        #[test]
        fn sf_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_list(&bytes);
            let _ = parse_dictionary(&bytes);
            let _ = parse_item(&bytes);
            let _ = parse_bare_item(&bytes);
        }

        #[test]
        fn sf_parsers_never_panic_sf_like(s in "[a-zA-Z0-9 ,;=()\"\\\\:?*%./+-]{0,48}") {
            let _ = parse_list(s.as_bytes());
            let _ = parse_dictionary(s.as_bytes());
            let _ = parse_item(s.as_bytes());
        }

        #[test]
        fn sf_string_roundtrip(s in "[ -~]{0,40}") {
            let text = string_item(s.as_bytes());
            prop_assert_eq!(parse_bare_item(&text).unwrap(), BareItem::String(s.into_bytes()));
        }
    }
}
