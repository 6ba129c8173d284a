//! The one place where Python option values become the core's enums and
//! worker counts. Values arrive as any Python object, so that a wrong one of
//! any type is reported in the package's words.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyInt, PyString, PyType};

use crate::aligner::options::{AlignOptions, Choice};
use crate::parallel::Workers;
use crate::py::errors::{self, IntoPyResult};

/// The value of option `arg` named by `value`.
pub(crate) fn choice<T: Choice>(value: &Bound<'_, PyAny>, arg: &str) -> PyResult<T> {
    let name = value.cast::<PyString>().ok().and_then(|s| s.to_str().ok().and_then(T::from_name));
    match name {
        Some(choice) => Ok(choice),
        None => {
            let names: Vec<String> = T::NAMES.iter().map(|(name, _)| format!("'{name}'")).collect();
            errors::invalid(arg, format!("must be one of {}, got {}", names.join(", "), value.repr()?))
        }
    }
}

/// [`choice`] for an option where `None` means "told otherwise".
pub(crate) fn optional_choice<T: Choice>(value: Option<&Bound<'_, PyAny>>, arg: &str) -> PyResult<Option<T>> {
    value.filter(|value| !value.is_none()).map(|value| choice(value, arg)).transpose()
}

/// A `workers` argument: an int (Python's or numpy's), 1 for serial, -1 for
/// every core.
pub(crate) fn workers(value: &Bound<'_, PyAny>) -> PyResult<Workers> {
    static NUMPY_INTEGER: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let numpy_integer = NUMPY_INTEGER.import(value.py(), "numpy", "integer")?;
    let is_int = value.is_instance_of::<PyInt>() || value.is_instance(numpy_integer)?;
    if !is_int || value.is_instance_of::<PyBool>() {
        return errors::wrong_type("workers", format!("must be an int, got {}", value.get_type().name()?));
    }
    match value.extract::<i64>() {
        Ok(count) => Workers::new(count).into_py_result(),
        // Beyond 64 bits: no thread count.
        Err(_) => errors::invalid("workers", format!("must be -1 (all cores) or a positive count, got {value}")),
    }
}

/// Whether aligning with these options uses the MinED map
/// ([`AlignOptions::needs_vocab_map`]), so that a cached map is loaded only then.
#[pyfunction]
#[pyo3(signature = (*, vocab_align, method, candidates))]
pub(crate) fn needs_vocab_map(
    vocab_align: &Bound<'_, PyAny>,
    method: &Bound<'_, PyAny>,
    candidates: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let options = AlignOptions {
        vocab_align: choice(vocab_align, "vocab_align")?,
        method: choice(method, "method")?,
        candidates: choice(candidates, "candidates")?,
        ..AlignOptions::default()
    };
    Ok(options.needs_vocab_map())
}
