//! (in progress: owned by the lead)
