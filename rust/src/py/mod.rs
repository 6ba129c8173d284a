//! Python bindings (`fusellm_fast._core`), one file per exposed type
//! (`Vocabularies`, `Aligner`, the functions on token strings). Arrays
//! are borrowed without copying, the work runs with the GIL released, and
//! results move into numpy arrays without copying; the MinED map an aligner
//! holds is handed out as read-only views.

mod aligner;
mod batch;
mod errors;
mod options;
mod text;
mod vocabularies;

use pyo3::prelude::*;

use crate::aligner::batch::status;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(text::edit_distance, m)?)?;
    m.add_function(wrap_pyfunction!(text::token_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(options::needs_vocab_map, m)?)?;
    m.add_class::<vocabularies::Vocabularies>()?;
    m.add_class::<aligner::Aligner>()?;
    m.add("STATUS_PADDING", status::PADDING)?;
    m.add("STATUS_EMPTY", status::EMPTY)?;
    m.add("STATUS_MATCHED", status::MATCHED)?;
    m.add("STATUS_ONEHOT", status::ONEHOT)?;
    Ok(())
}
