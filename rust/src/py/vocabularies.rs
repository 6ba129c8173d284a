//! `_core.Vocabularies`: two vocabularies read with their options, for the
//! MinED map and for the aligners made of them.

use std::sync::Arc;

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::aligner::options::{Choice, Side, VocabularyOptions};
use crate::aligner::vocabularies::Vocabularies as CoreVocabularies;
use crate::py::errors::{self, IntoPyResult};
use crate::py::options::{self, choice, optional_choice};

/// Two vocabularies with their markers given or detected, their families and
/// special tokens; immutable.
#[pyclass(frozen, module = "fusellm_fast._core")]
pub(crate) struct Vocabularies {
    pub(crate) inner: Arc<CoreVocabularies>,
}

type MapArrays<'py> = (Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i32>>);

#[pymethods]
impl Vocabularies {
    /// Both sides' options come in pairs: `families` and `special_ids` are
    /// (source, target).
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        source_tokens: Vec<String>,
        target_tokens: Vec<String>,
        markers: (Option<String>, Option<String>),
        normalize: &Bound<'_, PyAny>,
        families: (Option<Bound<'_, PyAny>>, Option<Bound<'_, PyAny>>),
        special_ids: (Vec<u32>, Vec<u32>),
        special_pairs: Vec<(u32, u32)>,
    ) -> PyResult<Self> {
        let options = VocabularyOptions {
            source_marker: markers.0.as_deref(),
            target_marker: markers.1.as_deref(),
            normalize: choice(normalize, "normalize")?,
            source_family: optional_choice(families.0.as_ref(), "source_family")?,
            target_family: optional_choice(families.1.as_ref(), "target_family")?,
            source_special_ids: &special_ids.0,
            target_special_ids: &special_ids.1,
            special_pairs: &special_pairs,
        };
        let inner = py.detach(|| CoreVocabularies::new(source_tokens, target_tokens, &options)).into_py_result()?;
        Ok(Vocabularies { inner: Arc::new(inner) })
    }

    #[getter]
    fn normalize(&self) -> &'static str {
        self.inner.normalize.name()
    }

    #[getter]
    fn source_marker(&self) -> &str {
        &self.inner.source.marker
    }

    #[getter]
    fn target_marker(&self) -> &str {
        &self.inner.target.marker
    }

    #[getter]
    fn source_size(&self) -> usize {
        self.inner.source.tokens.len()
    }

    #[getter]
    fn target_size(&self) -> usize {
        self.inner.target.tokens.len()
    }

    /// The concatenated bytes of a sequence of token ids of one side.
    #[pyo3(signature = (ids, *, side))]
    fn text_bytes<'py>(&self, py: Python<'py>, ids: Vec<i64>, side: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let vocab = &self.inner.side(choice::<Side>(side, "side")?).bytes;
        let mut text = Vec::new();
        for (pos, &id) in ids.iter().enumerate() {
            if id < 0 || id as usize >= vocab.len() {
                return errors::invalid("ids", format!("position {pos}: id {id} is outside the vocabulary (size {})", vocab.len()));
            }
            text.extend_from_slice(vocab.get(id as usize));
        }
        Ok(PyBytes::new(py, &text))
    }

    /// Builds the MinED map of the two vocabularies: `(target_ids, distances)`.
    #[pyo3(signature = (*, workers))]
    fn build_vocab_map<'py>(&self, py: Python<'py>, workers: &Bound<'py, PyAny>) -> PyResult<MapArrays<'py>> {
        let workers = options::workers(workers)?;
        let map = py.detach(|| workers.install(|| self.inner.build_vocab_map())).into_py_result()?.into_py_result()?;
        Ok((map.target_ids.into_pyarray(py), map.distances.into_pyarray(py)))
    }
}
