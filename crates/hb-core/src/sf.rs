//! The subset of RFC 8941 structured fields used by the reference (spec 03 §12).
//!
//! OWNER: helper B (codec).
