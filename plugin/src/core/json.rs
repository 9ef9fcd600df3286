//! A small JSON reader and writer for the configuration, the heartbeat API, pull answers and etcd
//! answers (docs/design.md#configuration).
//!
//! Why not serde_json: it and its serde derives were a third of the .wasm every Envoy worker
//! loads and compiles (docs/module-size.md). The reader is a pull parser the decoders walk field
//! by field; it accepts exactly RFC 8259 JSON and words its errors as serde_json did (`invalid
//! type: string "five", expected u32 at line 1 column 44`), so a refused configuration reads as
//! it did before. Numbers that are not integers are kept as text: nothing here needs a float.

use std::fmt;

/// A JSON error: what is wrong and where (1-based line, column of the byte it was found at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    pub line: usize,
    pub column: usize,
    /// The field it is about, written as serde_path_to_error wrote it (`detect.statuses[1]`,
    /// `redispatch.?` where no key was read yet); empty for the document itself.
    pub path: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

/// A value a field did not expect, as serde words it (`string "x"`, `integer `5``, `null`).
enum Unexpected {
    Null,
    Bool(bool),
    Integer(String),
    Float(String),
    Str(String),
    Seq,
    Map,
}

impl fmt::Display for Unexpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unexpected::Null => f.write_str("null"),
            Unexpected::Bool(b) => write!(f, "boolean `{b}`"),
            Unexpected::Integer(n) => write!(f, "integer `{n}`"),
            Unexpected::Float(n) => write!(f, "floating point `{n}`"),
            Unexpected::Str(s) => write!(f, "string {s:?}"),
            Unexpected::Seq => f.write_str("sequence"),
            Unexpected::Map => f.write_str("map"),
        }
    }
}

/// A number as written: an integer that fits (u64, or i64 when negative) or anything else.
enum Number {
    Unsigned(u64),
    Signed(i64),
    Other(String),
}

/// One step of the path to the value being read.
enum Segment {
    Key(String),
    Index(usize),
    /// Looking for a key.
    NoKey,
}

/// A pull parser over one JSON document.
pub struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    path: Vec<Segment>,
}

impl<'a> Reader<'a> {
    pub fn new(s: &'a [u8]) -> Self {
        Reader {
            s,
            i: 0,
            path: Vec::new(),
        }
    }

    fn path_text(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Segment::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                    continue;
                }
                _ if out.is_empty() => {}
                _ => out.push('.'),
            }
            match seg {
                Segment::Key(k) => out.push_str(k),
                _ => out.push('?'),
            }
        }
        out
    }

    fn error_at(&self, at: usize, message: String) -> Error {
        let at = at.min(self.s.len());
        let head = self.s.get(..at).unwrap_or_default();
        let line_start = head
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p.saturating_add(1));
        let line = head
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            .saturating_add(1);
        Error {
            message,
            line,
            column: at.saturating_sub(line_start),
            path: self.path_text(),
        }
    }

    /// An error at what was read last.
    pub fn error(&self, message: impl Into<String>) -> Error {
        self.error_at(self.i, message.into())
    }

    /// An error at the byte looked at but not read.
    fn peek_error(&self, message: &str) -> Error {
        self.error_at(self.i.saturating_add(1), message.into())
    }

    /// Reads one byte (the caller has seen it).
    fn bump(&mut self) {
        self.i = self.i.saturating_add(1);
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek();
        if b.is_some() {
            self.bump();
        }
        b
    }

    /// Skips whitespace; the next byte, not read.
    fn ws(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.bump();
        }
        self.peek()
    }

    /// Only whitespace may follow the document.
    pub fn end(&mut self) -> Result<(), Error> {
        match self.ws() {
            Some(_) => Err(self.peek_error("trailing characters")),
            None => Ok(()),
        }
    }

    fn ident(&mut self, rest: &[u8]) -> Result<(), Error> {
        for &want in rest {
            match self.next() {
                None => return Err(self.error("EOF while parsing a value")),
                Some(b) if b != want => return Err(self.error("expected ident")),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The value starts here: its first byte, not read, or the error for none.
    fn value_start(&mut self) -> Result<u8, Error> {
        self.ws()
            .ok_or_else(|| self.peek_error("EOF while parsing a value"))
    }

    /// Reads the value that is not of the type `expected` names and words the error.
    fn invalid_type(&mut self, expected: &str) -> Error {
        let unexpected = match self.peek().unwrap_or(0) {
            b'n' => {
                self.bump();
                if let Err(e) = self.ident(b"ull") {
                    return e;
                }
                Unexpected::Null
            }
            b't' => {
                self.bump();
                if let Err(e) = self.ident(b"rue") {
                    return e;
                }
                Unexpected::Bool(true)
            }
            b'f' => {
                self.bump();
                if let Err(e) = self.ident(b"alse") {
                    return e;
                }
                Unexpected::Bool(false)
            }
            b'-' | b'0'..=b'9' => match self.number() {
                Ok(Number::Unsigned(n)) => Unexpected::Integer(n.to_string()),
                Ok(Number::Signed(n)) => Unexpected::Integer(n.to_string()),
                Ok(Number::Other(t)) => Unexpected::Float(t),
                Err(e) => return e,
            },
            b'"' => {
                self.bump();
                match self.string_body() {
                    Ok(s) => Unexpected::Str(s),
                    Err(e) => return e,
                }
            }
            b'[' => Unexpected::Seq,
            b'{' => Unexpected::Map,
            _ => return self.peek_error("expected value"),
        };
        self.error(format!("invalid type: {unexpected}, expected {expected}"))
    }

    /// A number's text (the first byte is `-` or a digit).
    fn number(&mut self) -> Result<Number, Error> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.bump();
        }
        match self.next() {
            Some(b'0') => {
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.peek_error("invalid number"));
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.bump();
                }
            }
            None => return Err(self.error("EOF while parsing a value")),
            Some(_) => return Err(self.error("invalid number")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.bump();
            let digits = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.bump();
            }
            if self.i == digits {
                return Err(match self.peek() {
                    Some(_) => self.peek_error("invalid number"),
                    None => self.peek_error("EOF while parsing a value"),
                });
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.bump();
            if let Some(b'+' | b'-') = self.peek() {
                self.bump();
            }
            match self.next() {
                Some(b'0'..=b'9') => {}
                None => return Err(self.error("EOF while parsing a value")),
                Some(_) => return Err(self.error("invalid number")),
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.bump();
            }
        }
        let text = String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default());
        if integer {
            if negative {
                // `-0` is a float to serde_json; so is anything below i64::MIN.
                if let Ok(n) = text.parse::<i64>() {
                    if n != 0 {
                        return Ok(Number::Signed(n));
                    }
                }
            } else if let Ok(n) = text.parse::<u64>() {
                return Ok(Number::Unsigned(n));
            }
        }
        Ok(Number::Other(text.into_owned()))
    }

    /// The rest of a string whose opening quote was read.
    fn string_body(&mut self) -> Result<String, Error> {
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.next() else {
                return Err(self.error("EOF while parsing a string"));
            };
            match b {
                b'"' => break,
                b'\\' => self.escape(&mut out)?,
                0..=0x1f => {
                    return Err(self
                        .error("control character (\\u0000-\\u001F) found while parsing a string"))
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|e| {
            let bad = e
                .as_bytes()
                .len()
                .saturating_sub(e.utf8_error().valid_up_to());
            let mut err = self.error("invalid unicode code point");
            err.column = err.column.saturating_sub(bad);
            err
        })
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let Some(c) = self.next() else {
            return Err(self.error("EOF while parsing a string"));
        };
        let plain = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode_escape(out),
            _ => return Err(self.error("invalid escape")),
        };
        out.push(plain);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, Error> {
        let end = self.i.saturating_add(4);
        let Some(digits) = self.s.get(self.i..end) else {
            self.i = self.s.len();
            return Err(self.error("EOF while parsing a string"));
        };
        self.i = end;
        let mut n: u16 = 0;
        for &d in digits {
            let Some(v) = char::from(d).to_digit(16) else {
                return Err(self.error("invalid escape"));
            };
            n = (n << 4) | u16::try_from(v).unwrap_or(0);
        }
        Ok(n)
    }

    fn unicode_escape(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let n = self.hex4()?;
        if (0xDC00..=0xDFFF).contains(&n) {
            return Err(self.error("lone leading surrogate in hex escape"));
        }
        let code = if (0xD800..=0xDBFF).contains(&n) {
            for want in [b'\\', b'u'] {
                match self.next() {
                    None => return Err(self.error("EOF while parsing a string")),
                    Some(b) if b != want => return Err(self.error("unexpected end of hex escape")),
                    Some(_) => {}
                }
            }
            let n2 = self.hex4()?;
            if !(0xDC00..=0xDFFF).contains(&n2) {
                return Err(self.error("lone leading surrogate in hex escape"));
            }
            // Both are in range (checked above): no arithmetic here can overflow.
            let high = u32::from(n).saturating_sub(0xD800) << 10;
            let low = u32::from(n2).saturating_sub(0xDC00);
            (high | low).saturating_add(0x1_0000)
        } else {
            u32::from(n)
        };
        let c = char::from_u32(code).ok_or_else(|| self.error("invalid unicode code point"))?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    /// A string value.
    pub fn string(&mut self) -> Result<String, Error> {
        if self.value_start()? == b'"' {
            self.bump();
            self.string_body()
        } else {
            Err(self.invalid_type("a string"))
        }
    }

    /// An unsigned integer at most `max`; `expected` is its Rust type (`u32`).
    pub fn unsigned(&mut self, max: u64, expected: &str) -> Result<u64, Error> {
        match self.value_start()? {
            b'-' | b'0'..=b'9' => {}
            _ => return Err(self.invalid_type(expected)),
        }
        match self.number()? {
            Number::Unsigned(n) if n <= max => Ok(n),
            Number::Unsigned(n) => {
                Err(self.error(format!("invalid value: integer `{n}`, expected {expected}")))
            }
            Number::Signed(n) => {
                Err(self.error(format!("invalid value: integer `{n}`, expected {expected}")))
            }
            Number::Other(t) => Err(self.error(format!(
                "invalid type: floating point `{t}`, expected {expected}"
            ))),
        }
    }

    /// An i64 written as a number or, as etcd's gateway writes 64-bit numbers, a string. A
    /// value that is neither is an error about the enclosing object (serde's untagged enum).
    pub fn int_or_string(&mut self) -> Result<i64, Error> {
        let n = match self.value_start()? {
            b'"' => {
                let s = self.string()?;
                s.parse::<i64>().map_err(|e| e.to_string())
            }
            b'-' | b'0'..=b'9' => match self.number()? {
                Number::Signed(n) => Ok(n),
                Number::Unsigned(n) => i64::try_from(n).map_err(|_| String::new()),
                Number::Other(_) => Err(String::new()),
            },
            _ => {
                self.skip()?;
                Err(String::new())
            }
        };
        n.map_err(|e| {
            let e = if e.is_empty() {
                "data did not match any variant of untagged enum Num".into()
            } else {
                e
            };
            self.object_error(e)
        })
    }

    pub fn boolean(&mut self) -> Result<bool, Error> {
        match self.value_start()? {
            b't' => {
                self.bump();
                self.ident(b"rue").map(|()| true)
            }
            b'f' => {
                self.bump();
                self.ident(b"alse").map(|()| false)
            }
            _ => Err(self.invalid_type("a boolean")),
        }
    }

    /// `null` (read) or another value (not read): an `Option`.
    pub fn null(&mut self) -> Result<bool, Error> {
        if self.ws() == Some(b'n') {
            self.bump();
            self.ident(b"ull")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// A unit variant of `variants`: its name as a string, or as serde_json also took it,
    /// `{"name": null}`.
    pub fn variant(&mut self, variants: &[&str]) -> Result<usize, Error> {
        let map = match self.value_start()? {
            b'"' => false,
            b'{' => {
                self.bump();
                match self.ws() {
                    Some(b'"') => true,
                    Some(b'}') => return Err(self.peek_error("expected value")),
                    Some(_) => return Err(self.peek_error("key must be a string")),
                    None => return Err(self.peek_error("EOF while parsing an object")),
                }
            }
            _ => return Err(self.peek_error("expected value")),
        };
        self.bump();
        let s = self.string_body()?;
        let Some(v) = variants.iter().position(|v| *v == s) else {
            let m = format!("unknown variant `{s}`, expected {}", OneOf(variants));
            return Err(self.error(m));
        };
        if map {
            self.colon()?;
            match self.value_start()? {
                b'n' => {
                    self.bump();
                    self.ident(b"ull")?;
                }
                _ => return Err(self.invalid_type("unit")),
            }
            match self.ws() {
                Some(b'}') => self.bump(),
                Some(_) => return Err(self.error("expected value")),
                None => return Err(self.error("EOF while parsing an object")),
            }
        }
        Ok(v)
    }

    /// Opens an array.
    fn array(&mut self) -> Result<Elements, Error> {
        if self.value_start()? == b'[' {
            self.bump();
            Ok(Elements { first: true })
        } else {
            Err(self.invalid_type("a sequence"))
        }
    }

    /// The next key of an object, or None at its end (the `}` is read). An error here is one
    /// before the key is known (serde_path_to_error's path ends in `?`).
    fn key(&mut self, fields: &mut Fields) -> Result<Option<String>, Error> {
        let b = match self.ws() {
            Some(b'}') => {
                self.bump();
                return Ok(None);
            }
            Some(b',') if !fields.first => {
                self.bump();
                self.ws()
            }
            Some(b) if fields.first => {
                fields.first = false;
                Some(b)
            }
            Some(_) => return Err(self.peek_error("expected `,` or `}`")),
            None => return Err(self.peek_error("EOF while parsing an object")),
        };
        let key = match b {
            Some(b'"') => {
                self.bump();
                self.string_body()?
            }
            Some(b'}') => return Err(self.peek_error("trailing comma")),
            Some(_) => return Err(self.peek_error("key must be a string")),
            None => return Err(self.peek_error("EOF while parsing a value")),
        };
        Ok(Some(key))
    }

    /// The colon between a key and its value.
    fn colon(&mut self) -> Result<(), Error> {
        match self.ws() {
            Some(b':') => {
                self.bump();
                Ok(())
            }
            Some(_) => Err(self.peek_error("expected `:`")),
            None => Err(self.peek_error("EOF while parsing an object")),
        }
    }

    /// An error about the object being read (an unknown, repeated or missing field): serde_json
    /// placed it after the object's closing brace when that came next.
    pub fn object_error(&mut self, message: String) -> Error {
        if self.ws() == Some(b'}') {
            self.bump();
        }
        self.error(message)
    }

    /// Reads a struct whose fields are `what.names`. serde took an object or an array of the
    /// fields in order, and so does this. `field` reads the value of the i-th name; a name
    /// without a default (`what.required`) must be there. Unknown keys are skipped, or errors
    /// with `what.deny_unknown`; a repeated key is an error.
    pub fn structure(
        &mut self,
        what: &Struct,
        field: &mut dyn FnMut(&mut Self, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let names = what.names;
        match self.value_start()? {
            b'[' => {
                self.bump();
                return self.structure_seq(what, field);
            }
            b'{' => self.bump(),
            _ => return Err(self.invalid_type(&format!("struct {}", what.name))),
        }
        let mut fields = Fields { first: true };
        let mut seen = 0u32;
        loop {
            self.path.push(Segment::NoKey);
            let key = self.key(&mut fields)?;
            self.path.pop();
            let Some(key) = key else {
                break;
            };
            let known = names.iter().position(|n| *n == key);
            match known {
                None if what.deny_unknown => {
                    let m = format!("unknown field `{key}`, expected {}", OneOf(names));
                    self.path.push(Segment::Key(key));
                    return Err(self.object_error(m));
                }
                Some(i) if seen & (1 << i) != 0 => {
                    return Err(self.object_error(format!("duplicate field `{key}`")));
                }
                _ => {}
            }
            self.colon()?;
            self.path.push(Segment::Key(key));
            match known {
                Some(i) => {
                    seen |= 1 << i;
                    field(self, i)?;
                }
                None => self.skip()?,
            }
            self.path.pop();
        }
        for (i, name) in names.iter().enumerate() {
            if what.required & !seen & (1 << i) != 0 {
                return Err(self.error(format!("missing field `{name}`")));
            }
        }
        Ok(())
    }

    fn structure_seq(
        &mut self,
        what: &Struct,
        field: &mut dyn FnMut(&mut Self, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let n = what.names.len();
        let mut elements = Elements { first: true };
        for i in 0..n {
            if self.element(&mut elements)? {
                self.path.push(Segment::Index(i));
                field(self, i)?;
                self.path.pop();
                continue;
            }
            // The array ended (its `]` read): the rest take their defaults.
            if let Some(j) = (i..n).find(|j| what.required & (1 << j) != 0) {
                let s = if n == 1 { "" } else { "s" };
                let m = format!(
                    "invalid length {j}, expected struct {} with {n} element{s}",
                    what.name
                );
                return Err(self.error(m));
            }
            return Ok(());
        }
        // Every field was read: the array must end here.
        let end = match self.ws() {
            Some(b']') => {
                self.bump();
                return Ok(());
            }
            Some(b',') => {
                self.bump();
                if self.ws() == Some(b']') {
                    "trailing comma"
                } else {
                    "trailing characters"
                }
            }
            Some(_) => "trailing characters",
            None => "EOF while parsing a list",
        };
        Err(self.peek_error(end))
    }

    /// `structure` with a closure.
    pub fn fields(
        &mut self,
        what: &Struct,
        mut field: impl FnMut(&mut Self, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.structure(what, &mut field)
    }

    /// Reads an array, `each` reading one element.
    pub fn elements(
        &mut self,
        each: &mut dyn FnMut(&mut Self) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut elements = self.array()?;
        let mut i = 0;
        while self.element(&mut elements)? {
            self.path.push(Segment::Index(i));
            each(self)?;
            self.path.pop();
            i = i.saturating_add(1);
        }
        Ok(())
    }

    /// A string or `null` (an `Option<String>`).
    pub fn opt_string(&mut self) -> Result<Option<String>, Error> {
        if self.null()? {
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// Whether another element follows (true) or the array ended (its `]` is read).
    fn element(&mut self, elements: &mut Elements) -> Result<bool, Error> {
        let b = match self.ws() {
            Some(b']') => {
                self.bump();
                return Ok(false);
            }
            Some(b',') if !elements.first => {
                self.bump();
                self.ws()
            }
            Some(b) if elements.first => {
                elements.first = false;
                Some(b)
            }
            Some(_) => return Err(self.peek_error("expected `,` or `]`")),
            None => return Err(self.peek_error("EOF while parsing a list")),
        };
        match b {
            Some(b']') => Err(self.peek_error("trailing comma")),
            Some(_) => Ok(true),
            None => Err(self.peek_error("EOF while parsing a value")),
        }
    }

    /// Reads any value without keeping it (an unknown field where they are allowed). Iterative:
    /// nesting depth costs heap, never stack.
    pub fn skip(&mut self) -> Result<(), Error> {
        let mut open: Vec<u8> = Vec::new();
        loop {
            // A value.
            let b = self.value_start()?;
            match b {
                b'n' | b't' | b'f' => {
                    self.bump();
                    let rest: &[u8] = match b {
                        b'n' => b"ull",
                        b't' => b"rue",
                        _ => b"alse",
                    };
                    self.ident(rest)?;
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                b'"' => {
                    self.bump();
                    self.skip_string()?;
                }
                b'[' | b'{' => {
                    self.bump();
                    open.push(b);
                    if b == b'[' && self.ws().is_none() {
                        return Err(self.peek_error("EOF while parsing a list"));
                    }
                    // An empty container closes at once.
                    let close = if b == b'[' { b']' } else { b'}' };
                    if self.ws() == Some(close) {
                        self.bump();
                        open.pop();
                    } else {
                        if b == b'{' {
                            self.skip_key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(self.peek_error("expected value")),
            }
            // After a value: a comma and the next one, or closing brackets.
            loop {
                let Some(&frame) = open.last() else {
                    return Ok(());
                };
                let close = if frame == b'[' { b']' } else { b'}' };
                match self.ws() {
                    Some(b',') => {
                        self.bump();
                        if frame == b'{' {
                            self.skip_key()?;
                        }
                        break;
                    }
                    Some(c) if c == close => {
                        self.bump();
                        open.pop();
                    }
                    Some(_) if frame == b'[' => return Err(self.peek_error("expected `,` or `]`")),
                    Some(_) => return Err(self.peek_error("expected `,` or `}`")),
                    None if frame == b'[' => {
                        return Err(self.peek_error("EOF while parsing a list"))
                    }
                    None => return Err(self.peek_error("EOF while parsing an object")),
                }
            }
        }
    }

    fn skip_key(&mut self) -> Result<(), Error> {
        match self.ws() {
            Some(b'"') => self.bump(),
            Some(_) => return Err(self.peek_error("key must be a string")),
            None => return Err(self.peek_error("EOF while parsing an object")),
        }
        self.skip_string()?;
        self.colon()
    }

    /// Like `string_body` without keeping it. As serde_json: no UTF-8 or surrogate check, and a
    /// control character is placed at itself, not after.
    fn skip_string(&mut self) -> Result<(), Error> {
        loop {
            match self.next() {
                None => return Err(self.error("EOF while parsing a string")),
                Some(b'"') => return Ok(()),
                Some(b'\\') => match self.next() {
                    None => return Err(self.error("EOF while parsing a string")),
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    // Not decoded: a lone surrogate is no error in a skipped string.
                    Some(b'u') => {
                        self.hex4()?;
                    }
                    Some(_) => return Err(self.error("invalid escape")),
                },
                Some(0..=0x1f) => {
                    return Err(self.error_at(
                        self.i.saturating_sub(1),
                        "control character (\\u0000-\\u001F) found while parsing a string".into(),
                    ))
                }
                Some(_) => {}
            }
        }
    }
}

/// A struct as serde's derive saw it.
pub struct Struct {
    /// The Rust name, for errors (`Config`).
    pub name: &'static str,
    /// The fields, in declaration order.
    pub names: &'static [&'static str],
    /// A bit for each field without a default.
    pub required: u32,
    pub deny_unknown: bool,
}

/// An object being read.
struct Fields {
    first: bool,
}

/// An array being read.
struct Elements {
    first: bool,
}

/// serde's list of what was expected: `a`, `a` or `b`, one of `a`, `b`, `c`.
pub struct OneOf<'a>(pub &'a [&'a str]);

impl fmt::Display for OneOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("no fields"),
            [a] => write!(f, "`{a}`"),
            [a, b] => write!(f, "`{a}` or `{b}`"),
            many => {
                f.write_str("one of ")?;
                for (i, n) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{n}`")?;
                }
                Ok(())
            }
        }
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let n = u32::from(c);
                out.push_str("\\u00");
                for digit in [n >> 4, n & 15] {
                    out.push(char::from_digit(digit, 16).unwrap_or('0'));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `"key":` (a key needs no escaping here: every key is a literal of ours).
pub fn push_key(out: &mut String, key: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// Appends an unsigned integer.
pub fn push_u64(out: &mut String, n: u64) {
    out.push_str(&n.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain",
            "q\"b\\s/",
            "\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "é😀",
        ] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
        for n in [0, 7, 10, 1_000, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn skip_reads_any_value_and_only_one() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for doc in [
            r#"{"a":[1,-2.5e+3,{"b":null,"c":[true,false,"\u00e9"]}],"d":{}}"#,
            "[]",
            "\"x\"",
            deep.as_str(),
        ] {
            let mut r = Reader::new(doc.as_bytes());
            r.skip().unwrap();
            r.end().unwrap();
        }
        for bad in [
            "[1,]",
            "{\"a\" 1}",
            "[1 2]",
            "{\"a\":}",
            "[",
            "{",
            "01",
            "\"\u{1}\"",
        ] {
            let mut r = Reader::new(bad.as_bytes());
            assert!(r.skip().and_then(|()| r.end()).is_err(), "{bad}");
        }
    }
}
