//! `hb-codec`: message codecs and the keys that sign them.
//!
//! So far: Arweave RSA wallets ([`wallet`]) and RSASSA-PSS signing and verification
//! ([`rsa_pss`]), spec 03 §9, and RSA `httpsig@1.0` commitments ([`httpsig_commit`]),
//! spec 03 §5.

pub mod ans104;
pub mod httpsig_commit;
pub mod rsa_pss;
pub mod wallet;

pub use rsa_pss::Hash;
pub use wallet::{Wallet, WalletError};
