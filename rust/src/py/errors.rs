//! The one place where core errors become Python exceptions. The exception
//! classes live in `fusellm_fast/errors.py` so that they can subclass both the
//! package's base class and `ValueError` / `TypeError`.

use pyo3::prelude::*;

use crate::error::Error;

fn raise<T>(class: &str, message: String) -> PyResult<T> {
    Python::attach(|py| {
        let module = py.import("fusellm_fast.errors")?;
        let class = module.getattr(class)?;
        Err(PyErr::from_value(class.call1((message,))?))
    })
}

pub(crate) fn invalid<T>(arg: &str, msg: String) -> PyResult<T> {
    raise("InvalidInputError", format!("{arg}: {msg}"))
}

pub(crate) fn wrong_type<T>(arg: &str, msg: String) -> PyResult<T> {
    raise("InputTypeError", format!("{arg}: {msg}"))
}

pub(crate) trait IntoPyResult<T> {
    fn into_py_result(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn into_py_result(self) -> PyResult<T> {
        self.or_else(|e| {
            let class = match &e {
                Error::InvalidValue { .. } => "InvalidInputError",
                Error::MarkerDetection { .. } => "MarkerDetectionError",
                Error::TooLarge { .. } => "InputTooLargeError",
                Error::CorruptVocabMap(_) => "VocabMapError",
            };
            raise(class, e.to_string())
        })
    }
}
