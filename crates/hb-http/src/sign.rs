//! The node's signature on every reply (spec 05 §2.4 step 8).
//!
//! An RSA-4096 signature costs milliseconds, a thousand times more than resolving a
//! simple path, so the reply is encoded once and signed once, off the async workers
//! (through the context's blocking hook), and the signature of a signature base the node
//! has signed before is reused: RSA-PSS signatures are randomised, but any valid
//! signature of a base is as good as another, so a repeated reply (`/~meta@1.0/info`
//! polled by clients) costs an encoding and a hash.

use std::num::NonZeroUsize;
use std::sync::Arc;

use hb_codec::Wallet;
use hb_codec::ans104::{self, Ans104Error};
use hb_codec::httpsig_commit::{self, HttpsigError};
use hb_core::httpsig::HttpMessage;
use hb_core::id::Id;
use hb_core::{Ctx, Message};
use lru::LruCache;
use parking_lot::Mutex;

/// How many signature bases keep their signature.
const MEMO_ENTRIES: usize = 4096;

/// Signs replies with the node wallet.
pub struct Signer {
    wallet: Arc<Wallet>,
    /// sha256(signature base) → signature.
    memo: Mutex<LruCache<[u8; 32], Arc<[u8]>>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("wallet", &self.wallet)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `wallet`.
    #[must_use]
    pub fn new(wallet: Arc<Wallet>) -> Self {
        let entries = NonZeroUsize::new(MEMO_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Signer {
            wallet,
            memo: Mutex::new(LruCache::new(entries)),
        }
    }

    /// The node wallet.
    #[must_use]
    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    /// The httpsig encoding of `msg` (no commitments) with the node's signature.
    ///
    /// # Errors
    /// The message cannot be encoded, or signing fails.
    pub fn sign_http(&self, msg: &Message, ctx: &Ctx) -> Result<HttpMessage, HttpsigError> {
        httpsig_commit::sign_http(msg, &self.wallet, |wallet, base| {
            let key = Id::sha256(base).0;
            if let Some(sig) = self.memo.lock().get(&key) {
                return Ok(sig.to_vec());
            }
            let sig = ctx.blocking(|| httpsig_commit::sign_base(wallet, base))?;
            self.memo.lock().put(key, Arc::from(sig.as_slice()));
            Ok(sig)
        })
    }

    /// `msg` committed by the node (httpsig), for replies in other codecs.
    ///
    /// # Errors
    /// The message cannot be encoded, or signing fails.
    pub fn commit(&self, msg: &Message, ctx: &Ctx) -> Result<Message, HttpsigError> {
        ctx.blocking(|| httpsig_commit::commit(msg, &self.wallet))
    }

    /// `msg` committed by the node as an ANS-104 data item (`accept-codec: ans104@1.0`).
    ///
    /// # Errors
    /// The message cannot be a data item, or signing fails.
    pub fn commit_ans104(&self, msg: &Message, ctx: &Ctx) -> Result<Message, Ans104Error> {
        ctx.blocking(|| ans104::commit(msg, &self.wallet))
    }
}
