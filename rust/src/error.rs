//! The one error type of the core. The Python bindings map each variant onto a
//! Python exception once, in `py::errors`.

/// Everything that can go wrong in the core, each naming the offending argument.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An argument has an invalid value (wrong length, out of range, not finite, ...).
    #[error("{arg}: {msg}")]
    InvalidValue { arg: &'static str, msg: String },
    /// A space marker was not given and cannot be detected from the vocabulary.
    #[error("{arg}: {msg}")]
    MarkerDetection { arg: &'static str, msg: String },
    /// An input or output too large to address in the core's index types or
    /// to allocate (see `limits`).
    #[error("{arg}: {msg}")]
    TooLarge { arg: &'static str, msg: String },
    /// A saved vocabulary map is corrupt or does not belong to the given vocabularies.
    #[error("{0}")]
    CorruptVocabMap(String),
}

impl Error {
    pub(crate) fn invalid(arg: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidValue { arg, msg: msg.into() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
