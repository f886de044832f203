//! Arweave wallets: RSA-4096 keys (public exponent 65537) kept as JWK JSON files
//! (spec 03 §9.1).
//!
//! * Public key bytes = the modulus `n`, big-endian (512 bytes for a 4096-bit key).
//! * Address = `b64url(sha256(n))` (43 characters).
//! * httpsig `keyid` = `b64url(n)`.
//!
//! A malformed key file is always a [`WalletError`], never a panic: every component is
//! decoded and then checked for consistency by the `rsa` crate before it is used.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::sha2::{Digest as _, Sha256};
use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
use rsa::{BoxedUint, PrivateKey};
use serde::{Deserialize, Serialize};

/// Modulus size of an Arweave wallet, in bits.
pub const WALLET_BITS: usize = 4096;
/// The public exponent of every Arweave wallet.
pub const PUBLIC_EXPONENT: u64 = 65537;

/// Why a wallet could not be loaded, generated, saved or used.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// The key file could not be read.
    #[error("cannot read the key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file could not be written.
    #[error("cannot write the key file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Saving would overwrite an existing file.
    #[error("refusing to overwrite the existing file {0}")]
    Exists(PathBuf),
    /// The key file is not JSON of the expected shape.
    #[error("the key file is not valid JWK JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The key is not an RSA key (`kty` is something else).
    #[error("unsupported key type `{0}` (only RSA wallets are supported)")]
    KeyType(String),
    /// A required JWK member is absent.
    #[error("the key is missing the `{0}` member")]
    Missing(&'static str),
    /// A JWK member is not base64url or is empty.
    #[error("the key's `{0}` member is not a non-empty base64url value")]
    Encoding(&'static str),
    /// The public exponent is not 65537.
    #[error("the public exponent must be 65537")]
    Exponent,
    /// The components do not form a valid RSA key.
    #[error("the key's components do not form a valid RSA key: {0}")]
    InvalidKey(rsa::Error),
    /// Key generation failed.
    #[error("cannot generate an RSA key: {0}")]
    Generate(rsa::Error),
    /// Signing failed.
    #[error("RSA-PSS signing failed: {0}")]
    Sign(rsa::Error),
    /// The fast signer (AWS-LC) failed.
    #[error("RSA-PSS signing failed: {0}")]
    Signer(String),
}

/// An RSA wallet with its private key.
///
/// `Debug` shows only the address: the private key never appears in logs.
#[derive(Clone)]
pub struct Wallet {
    key: PrivateKey,
    /// The same key for AWS-LC, which signs 7x faster than `rsa` (docs/adr/0003). `None`
    /// only for keys AWS-LC refuses (outside 2048–8192 bits); those sign with `rsa`.
    signer: Option<Arc<aws_lc_rs::rsa::KeyPair>>,
    /// `n`, big-endian, minimal (its top bit is set, so 512 bytes for RSA-4096).
    modulus: Vec<u8>,
    address: [u8; 32],
}

impl fmt::Debug for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wallet")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

/// The JWK members we read and write. Unknown members (e.g. `ext`) are ignored.
#[derive(Debug, Deserialize, Serialize)]
struct Jwk {
    kty: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dq: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qi: Option<String>,
}

fn b64_field(value: Option<&String>, name: &'static str) -> Result<Vec<u8>, WalletError> {
    let text = value.ok_or(WalletError::Missing(name))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| WalletError::Encoding(name))?;
    if bytes.is_empty() {
        return Err(WalletError::Encoding(name));
    }
    Ok(bytes)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn uint_b64(v: &BoxedUint) -> String {
    b64(&v.to_be_bytes_trimmed_vartime())
}

/// The address of a modulus: `sha256(n)` (raw 32 bytes).
#[must_use]
pub fn address_bytes(modulus: &[u8]) -> [u8; 32] {
    Sha256::digest(modulus).into()
}

/// The address of a modulus as 43 characters of base64url.
#[must_use]
pub fn address_of(modulus: &[u8]) -> String {
    b64(&address_bytes(modulus))
}

/// The httpsig signature name for an address: `http-sig-` + lowercase hex of address
/// bytes 1..9 (as the reference names its signatures).
#[must_use]
pub fn httpsig_name_of(address: &[u8; 32]) -> String {
    let mut s = String::from("http-sig-");
    for b in &address[1..9] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Wallet {
    fn from_key(key: PrivateKey) -> Self {
        let modulus = key.n_bytes().into_vec();
        let address = address_bytes(&modulus);
        let signer = key
            .to_pkcs1_der()
            .ok()
            .and_then(|der| aws_lc_rs::rsa::KeyPair::from_der(der.as_bytes()).ok())
            .map(Arc::new);
        Wallet {
            key,
            signer,
            modulus,
            address,
        }
    }

    /// Parses a JWK JSON key file. Reads `n`, `e`, `d` and, when present, `p` and `q`
    /// (without them the primes are recovered from `n`, `e`, `d`); `dp`, `dq`, `qi` are
    /// recomputed rather than trusted.
    ///
    /// # Errors
    /// Any malformed, inconsistent or non-RSA key gives a [`WalletError`].
    pub fn from_jwk_json(json: &[u8]) -> Result<Self, WalletError> {
        let jwk: Jwk = serde_json::from_slice(json)?;
        match jwk.kty.as_deref() {
            Some("RSA") => {}
            Some(other) => return Err(WalletError::KeyType(other.to_owned())),
            None => return Err(WalletError::Missing("kty")),
        }
        let n = b64_field(jwk.n.as_ref(), "n")?;
        let e = b64_field(jwk.e.as_ref(), "e")?;
        let d = b64_field(jwk.d.as_ref(), "d")?;
        let e = BoxedUint::from_be_slice_vartime(&e);
        if e != BoxedUint::from(PUBLIC_EXPONENT) {
            return Err(WalletError::Exponent);
        }
        let primes = match (jwk.p.is_some(), jwk.q.is_some()) {
            (false, false) => Vec::new(),
            _ => vec![
                BoxedUint::from_be_slice_vartime(&b64_field(jwk.p.as_ref(), "p")?),
                BoxedUint::from_be_slice_vartime(&b64_field(jwk.q.as_ref(), "q")?),
            ],
        };
        let key = PrivateKey::from_components(
            BoxedUint::from_be_slice_vartime(&n),
            e,
            BoxedUint::from_be_slice_vartime(&d),
            primes,
        )
        .map_err(WalletError::InvalidKey)?;
        Ok(Self::from_key(key))
    }

    /// Loads a JWK key file.
    ///
    /// # Errors
    /// The file cannot be read, or it is not a valid RSA JWK (see [`Self::from_jwk_json`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, WalletError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| WalletError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_jwk_json(&bytes)
    }

    /// Generates a new RSA-4096 wallet (e = 65537) from the operating system RNG.
    /// Takes a few seconds.
    ///
    /// # Errors
    /// The RNG or the prime search fails.
    pub fn generate() -> Result<Self, WalletError> {
        let mut rng = crypto_common::getrandom::SysRng;
        let key = PrivateKey::new_with_exp(&mut rng, WALLET_BITS, BoxedUint::from(PUBLIC_EXPONENT))
            .map_err(WalletError::Generate)?;
        Ok(Self::from_key(key))
    }

    /// The key as JWK JSON: `kty`, `n`, `e`, `d`, `p`, `q`, `dp`, `dq`, `qi`, all
    /// base64url big-endian.
    #[must_use]
    pub fn to_jwk_json(&self) -> String {
        let k = &self.key;
        let prime = |i: usize| k.primes().get(i).map(|p| uint_b64(p.as_ref()));
        let jwk = Jwk {
            kty: Some("RSA".to_owned()),
            n: Some(b64(&self.modulus)),
            e: Some(b64(&k.e_bytes())),
            d: Some(uint_b64(k.d())),
            p: prime(0),
            q: prime(1),
            dp: k.dp().map(uint_b64),
            dq: k.dq().map(uint_b64),
            qi: k.crt_coefficient().as_ref().map(uint_b64),
        };
        // Serialising a struct of strings cannot fail.
        serde_json::to_string(&jwk).unwrap_or_default()
    }

    /// Writes the key as JWK JSON to a new file. On unix the file is created with mode
    /// 0600 (never readable by others, not even briefly). An existing file is never
    /// overwritten.
    ///
    /// # Errors
    /// The file exists ([`WalletError::Exists`]) or cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), WalletError> {
        let path = path.as_ref();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let write_err = |source| WalletError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                WalletError::Exists(path.to_owned())
            } else {
                write_err(e)
            }
        })?;
        file.write_all(self.to_jwk_json().as_bytes())
            .map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        Ok(())
    }

    /// The public modulus `n`, big-endian (512 bytes for RSA-4096).
    #[must_use]
    pub fn public_modulus(&self) -> &[u8] {
        &self.modulus
    }

    /// The raw 32-byte address, `sha256(n)`.
    #[must_use]
    pub fn address_bytes(&self) -> &[u8; 32] {
        &self.address
    }

    /// The address: `b64url(sha256(n))`, 43 characters.
    #[must_use]
    pub fn address(&self) -> String {
        b64(&self.address)
    }

    /// The httpsig `keyid`: `b64url(n)`.
    #[must_use]
    pub fn keyid(&self) -> String {
        b64(&self.modulus)
    }

    /// The httpsig signature name: `http-sig-` + hex of address bytes 1..9.
    #[must_use]
    pub fn httpsig_name(&self) -> String {
        httpsig_name_of(&self.address)
    }

    /// The key as AWS-LC holds it, when AWS-LC accepts it.
    pub(crate) fn fast_key(&self) -> Option<&aws_lc_rs::rsa::KeyPair> {
        self.signer.as_deref()
    }

    /// The private key, for the signing code in this crate.
    pub(crate) fn private_key(&self) -> &PrivateKey {
        &self.key
    }
}
