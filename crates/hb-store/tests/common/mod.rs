//! What the store's integration tests share: a seeded random-number generator (no
//! dependency, the same sequence on every machine) and a generator of random rich
//! messages that survive the structured codec (spec 03 §2) unchanged — the inputs that
//! docs/COMPATIBILITY.md ("Lossy conversions") lists as lossy are left out:
//!
//! * keys are lower case (ID-like keys of 43 bytes keep their case), never empty, never
//!   private (`priv…`), never a codec field (`commitments`, `ao-types`, `hashpath…`,
//!   …), without `/`, at most 32 per map;
//! * transaction-record defaults (`data: ""`, `quantity: 0`, `tags: []`, …) are not
//!   generated: the record field names are not used as keys;
//! * list items that are binaries are printable ASCII not starting with `(ao-type-`; a
//!   list holding a message starts with a message;
//! * floats are finite (every finite double round-trips).
#![allow(dead_code, reason = "each test binary uses part of this module")]

use bytes::Bytes;
use hb_core::{Message, Value};

/// The fixture wallet of the workspace (`tests/fixtures/key-1.json`).
pub const KEY1: &[u8] = include_bytes!("../../../../tests/fixtures/key-1.json");

/// The fixture wallet.
pub fn key1() -> hb_codec::Wallet {
    hb_codec::Wallet::from_jwk_json(KEY1).expect("the fixture wallet loads")
}

/// SplitMix64: a tiny, well-mixed, seeded generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % n as u64).expect("fits")
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of `xs`.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// Keys no generated message uses: private keys, the codecs' own fields, and the
/// transaction-record fields whose default values structured@1.0 drops (spec 03 §2.6).
pub fn is_avoided_key(k: &str) -> bool {
    k.starts_with("priv")
        || k.starts_with("hashpath")
        || matches!(
            k,
            "content-digest"
                | "unsigned_id"
                | "ao-types"
                | "ao-ids"
                | "commitments"
                | "signature"
                | "signature-input"
                | "body-keys"
                | "content-type"
                | "inline-body-key"
                | "id"
                | "owner"
                | "last_tx"
                | "target"
                | "data"
                | "data_root"
                | "tags"
                | "data_tree"
                | "quantity"
                | "data_size"
                | "reward"
                | "denomination"
                | "format"
                | "manifest"
        )
}

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const KEY_REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_.-";
const ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A random message generator.
#[derive(Debug, Clone)]
pub struct Gen {
    /// The random source.
    pub rng: Rng,
    /// Keep keys ASCII (messages to be signed: a non-ASCII key cannot be signed).
    pub ascii_keys: bool,
}

impl Gen {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Gen {
            rng: Rng::new(seed),
            ascii_keys: false,
        }
    }

    /// A key (see the module documentation).
    pub fn key(&mut self) -> String {
        loop {
            let k = match self.rng.below(12) {
                0 => (*self.rng.pick(&[
                    "body", "status", "path", "method", "1", "2", "10", "a", "b", "x-y", "größe",
                    "é",
                ]))
                .to_owned(),
                1 => (0..43)
                    .map(|_| char::from(*self.rng.pick(ID_CHARS)))
                    .collect(),
                _ => {
                    let n = self.rng.below(8);
                    let mut k = String::from(char::from(*self.rng.pick(LOWER)));
                    k.extend((0..n).map(|_| char::from(*self.rng.pick(KEY_REST))));
                    k
                }
            };
            if !is_avoided_key(&k) && (!self.ascii_keys || k.is_ascii()) {
                return k;
            }
        }
    }

    /// Printable ASCII (an RFC 8941 string can carry it) of up to `max` bytes, never
    /// starting with `(ao-type-`.
    pub fn sf_text(&mut self, max: usize) -> String {
        let n = self.rng.below(max + 1);
        let s: String = (0..n)
            .map(|_| char::from(0x20 + u8::try_from(self.rng.below(95)).expect("fits")))
            .collect();
        if s.starts_with("(ao-type-") {
            s.replace('(', "[")
        } else {
            s
        }
    }

    /// A binary outside lists: printable, empty, arbitrary bytes, non-ASCII text, or
    /// just over the 4096-byte header limit.
    pub fn binary(&mut self) -> Value {
        match self.rng.below(14) {
            0..=5 => Value::text(&self.sf_text(24)),
            6 | 7 => Value::text(""),
            8 | 9 => {
                let n = self.rng.between(1, 40);
                Value::bin(self.rng.bytes(n))
            }
            10 => {
                let n = self.rng.between(1, 6);
                let s: String = (0..n)
                    .map(|_| *self.rng.pick(&['é', 'ß', '→', '中', '😀', 'Ω', '\u{7f}']))
                    .collect();
                Value::text(&s)
            }
            11 => {
                let n = self.rng.between(4090, 4110);
                let b = u8::try_from(self.rng.below(256)).expect("fits");
                Value::bin(vec![b; n])
            }
            12 => {
                let n = self.rng.between(100, 3000);
                Value::bin(self.rng.bytes(n))
            }
            _ => Value::text(&"line one\r\nline two\n".repeat(self.rng.between(1, 4))),
        }
    }

    /// An integer: any `i64`, a small one, or 0.
    pub fn integer(&mut self) -> Value {
        Value::Integer(match self.rng.below(6) {
            0 => self.rng.next_u64().cast_signed(),
            1 => {
                // Up to 15 digits, the range the reference decodes.
                let x = i64::try_from(self.rng.below(1_000_000_000_000_000)).expect("fits");
                if self.rng.percent(50) { -x } else { x }
            }
            2 => 0,
            _ => i64::try_from(self.rng.below(2000)).expect("fits") - 1000,
        })
    }

    /// A finite float.
    pub fn float(&mut self) -> f64 {
        if self.rng.percent(25) {
            return *self.rng.pick(&[
                0.0,
                -0.0,
                1.0,
                1.5,
                0.1,
                -2.25,
                1e100,
                5e-324,
                f64::MAX,
                f64::MIN_POSITIVE,
            ]);
        }
        loop {
            let f = f64::from_bits(self.rng.next_u64());
            if f.is_finite() {
                return f;
            }
        }
    }

    /// An atom (RFC 8941 string text).
    pub fn atom(&mut self) -> Value {
        if self.rng.percent(25) {
            const ATOMS: [&str; 6] = ["true", "false", "ans104", "undefined", "null", "ok"];
            let atom = *self.rng.pick::<&str>(&ATOMS);
            Value::atom(atom)
        } else {
            Value::atom(&self.sf_text(16))
        }
    }

    fn list_scalar(&mut self) -> Value {
        match self.rng.below(9) {
            0..=2 => Value::text(&self.sf_text(16)),
            3 | 4 => self.integer(),
            5 | 6 => Value::Float(self.float()),
            _ => self.atom(),
        }
    }

    /// A list of scalars and lists of scalars, two deep.
    pub fn scalar_list(&mut self) -> Value {
        let n = self.rng.below(5);
        Value::list(
            (0..n)
                .map(|_| {
                    if self.rng.percent(20) {
                        let m = self.rng.below(4);
                        Value::list((0..m).map(|_| self.list_scalar()).collect())
                    } else {
                        self.list_scalar()
                    }
                })
                .collect(),
        )
    }

    /// A scalar value.
    pub fn scalar(&mut self) -> Value {
        match self.rng.below(15) {
            0..=5 => self.binary(),
            6..=8 => self.integer(),
            9 | 10 => Value::Float(self.float()),
            11 | 12 => self.atom(),
            _ => self.scalar_list(),
        }
    }

    /// A random message nested at most `depth` levels, with at most `max_keys` keys per
    /// map (at most 32).
    pub fn message(&mut self, depth: u32, max_keys: usize) -> Message {
        let n = self.rng.below(max_keys.min(32) + 1);
        let mut m = Message::new();
        for _ in 0..n {
            let k = self.key();
            let v = if depth == 0 {
                self.scalar()
            } else {
                match self.rng.below(11) {
                    0..=7 => self.scalar(),
                    8 | 9 => Value::Message(self.message(depth - 1, max_keys.min(8))),
                    _ => {
                        let mut items = vec![if self.rng.percent(50) {
                            Value::Message(self.message(depth - 1, 4))
                        } else {
                            self.scalar_list()
                        }];
                        for _ in 0..self.rng.below(3) {
                            items.push(if self.rng.percent(50) {
                                self.scalar()
                            } else {
                                Value::Message(self.message(depth - 1, 4))
                            });
                        }
                        Value::list(items)
                    }
                }
            };
            m.insert(&k, v);
        }
        m
    }

    /// A top-level message: [`Gen::message`], its top-level ID-like keys holding
    /// printable values (their binaries travel as RFC 8941 strings in `ao-ids`, spec 03
    /// §4.2 step 1: other bytes are a documented lossy case).
    pub fn top_message(&mut self, depth: u32, max_keys: usize) -> Message {
        let mut m = self.message(depth, max_keys);
        let id_like: Vec<String> = m
            .iter()
            .filter(|(k, v)| {
                k.len() == 43
                    && v.as_bytes()
                        .is_some_and(|b| !b.iter().all(|c| (0x20..0x7f).contains(c)))
            })
            .map(|(k, _)| k.to_string())
            .collect();
        for k in id_like {
            let text = self.sf_text(24);
            m.insert(&k, Value::text(&text));
        }
        m
    }

    /// A random binary of `n` bytes (large binaries: not compressible, not shared).
    pub fn big_binary(&mut self, n: usize) -> Value {
        Value::Binary(Bytes::from(self.rng.bytes(n)))
    }
}

/// The `i`th message of the crash writer (spec: `tests/crash_safety.rs`): random nested
/// messages of every size, about one in ten with a binary of 16–256 KiB and one in
/// twenty-five with one of 1–2.5 MiB. Unsigned, so that the checker can generate the
/// same messages again from the seed.
pub fn crash_message(g: &mut Gen) -> Message {
    let mut m = g.top_message(2, 10);
    let big = match g.rng.below(100) {
        0..=3 => Some(g.rng.between(1024 * 1024, 2560 * 1024)),
        4..=13 => Some(g.rng.between(16 * 1024, 256 * 1024)),
        _ => None,
    };
    if let Some(n) = big {
        let k = g.key();
        m.insert(&k, g.big_binary(n));
    }
    m
}

/// The crash writer: writes [`crash_message`]s generated from `seed` to the LMDB store
/// in `dir` (durable commits) until killed, printing `ACK <index> <uncommitted ID>` to
/// stdout, flushed, after each `write` returned `Ok` — and only then.
pub fn crash_writer(dir: &std::path::Path, seed: u64) -> ! {
    use std::io::Write as _;
    let store = hb_store::LmdbStore::open(dir, hb_store::Durability::Sync)
        .unwrap_or_else(|e| panic!("crash writer: cannot open the store: {e}"));
    let cache = hb_store::MessageCache::new(std::sync::Arc::new(store));
    let mut g = Gen::new(seed);
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let msg = crash_message(&mut g);
        let id = cache
            .write(&msg)
            .unwrap_or_else(|e| panic!("crash writer: message {i}: {e}"));
        writeln!(out, "ACK {i} {}", id.to_human())
            .and_then(|()| out.flush())
            .unwrap_or_else(|e| panic!("crash writer: stdout: {e}"));
    }
    unreachable!("the writer writes until it is killed")
}
