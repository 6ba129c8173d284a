//! Python bindings (`fusellm_fast._core`). Arrays are borrowed without copying,
//! the work runs with the GIL released, and results move into numpy arrays
//! without copying.

mod errors;

use numpy::ndarray::{Array2, Array3};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::edit_distance as distance;
use crate::parallel::{resolve_workers, run_with_workers};
use crate::remap::{self, AlignCounts, BatchInput, OneHot, VocabAlign};
use crate::vocab::detect_marker;
use crate::vocab_map::{build_vocab_map as build_map, VocabMap};
use errors::IntoPyResult;

/// Levenshtein distance between two strings over Unicode code points.
#[pyfunction]
fn edit_distance(a: &str, b: &str) -> u32 {
    distance::edit_distance(a, b)
}

/// The space marker of a vocabulary (`▁` or `Ġ`), or an error saying why none
/// can be told.
#[pyfunction]
#[pyo3(signature = (tokens, *, argument = "tokens"))]
fn detect_space_marker(tokens: Vec<String>, argument: &str) -> PyResult<&'static str> {
    let arg: &'static str = match argument {
        "source_tokens" => "source_tokens",
        "target_tokens" => "target_tokens",
        _ => "tokens",
    };
    detect_marker(&tokens, arg).into_py_result()
}

type MapArrays<'py> = (Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i32>>);

fn map_arrays<'py>(py: Python<'py>, map: &VocabMap) -> MapArrays<'py> {
    (map.target_ids.clone().into_pyarray(py), map.distances.clone().into_pyarray(py))
}

/// MinED map between two vocabularies: `(target_ids, distances)`.
#[pyfunction]
#[pyo3(signature = (source_tokens, target_tokens, source_marker, target_marker, *, workers = -1))]
fn build_vocab_map<'py>(
    py: Python<'py>,
    source_tokens: Vec<String>,
    target_tokens: Vec<String>,
    source_marker: &str,
    target_marker: &str,
    workers: i64,
) -> PyResult<MapArrays<'py>> {
    let workers = resolve_workers(workers).into_py_result()?;
    let map = py
        .detach(|| {
            run_with_workers(workers, || build_map(&source_tokens, &target_tokens, source_marker, target_marker))
                .and_then(|r| r)
        })
        .into_py_result()?;
    Ok((map.target_ids.into_pyarray(py), map.distances.into_pyarray(py)))
}

/// Both vocabularies prepared for alignment; immutable and safe to share
/// between threads.
#[pyclass(frozen, module = "fusellm_fast._core")]
struct Aligner {
    inner: remap::Aligner,
}

fn counts_dict<'py>(py: Python<'py>, counts: &AlignCounts) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("positions", counts.positions)?;
    d.set_item("matched", counts.matched)?;
    d.set_item("onehot", counts.onehot)?;
    d.set_item("empty", counts.empty)?;
    d.set_item("dropped_candidates", counts.dropped_candidates)?;
    Ok(d)
}

fn usize_vec(a: &PyReadonlyArray1<'_, i64>, arg: &'static str) -> PyResult<Vec<usize>> {
    a.as_slice()?
        .iter()
        .map(|&v| usize::try_from(v))
        .collect::<Result<_, _>>()
        .map_err(|_| crate::error::Error::invalid(arg, "offsets and lengths must be non-negative"))
        .into_py_result()
}

type AlignResult<'py> =
    (Bound<'py, PyArray3<i32>>, Bound<'py, PyArray3<f32>>, Bound<'py, PyArray2<i8>>, Bound<'py, PyDict>);

#[pymethods]
impl Aligner {
    #[new]
    #[pyo3(signature = (source_tokens, target_tokens, source_marker = None, target_marker = None))]
    fn new(
        py: Python<'_>,
        source_tokens: Vec<String>,
        target_tokens: Vec<String>,
        source_marker: Option<&str>,
        target_marker: Option<&str>,
    ) -> PyResult<Self> {
        let inner = py
            .detach(|| remap::Aligner::new(source_tokens, target_tokens, source_marker, target_marker))
            .into_py_result()?;
        Ok(Aligner { inner })
    }

    #[getter]
    fn source_marker(&self) -> &str {
        self.inner.source_marker()
    }

    #[getter]
    fn target_marker(&self) -> &str {
        self.inner.target_marker()
    }

    #[getter]
    fn source_size(&self) -> usize {
        self.inner.source_size()
    }

    #[getter]
    fn target_size(&self) -> usize {
        self.inner.target_size()
    }

    /// `(target_ids, distances)` of the MinED map, or None before it is built.
    fn vocab_map<'py>(&self, py: Python<'py>) -> Option<MapArrays<'py>> {
        self.inner.vocab_map().map(|m| map_arrays(py, m))
    }

    /// Uses a MinED map built elsewhere.
    fn set_vocab_map(&self, target_ids: PyReadonlyArray1<'_, i32>, distances: PyReadonlyArray1<'_, i32>) -> PyResult<()> {
        let map = VocabMap { target_ids: target_ids.as_slice()?.to_vec(), distances: distances.as_slice()?.to_vec() };
        self.inner.set_vocab_map(map).into_py_result()
    }

    /// Builds the MinED map unless present and returns it.
    #[pyo3(signature = (*, workers = -1))]
    fn ensure_vocab_map<'py>(&self, py: Python<'py>, workers: i64) -> PyResult<MapArrays<'py>> {
        let workers = resolve_workers(workers).into_py_result()?;
        let inner = &self.inner;
        py.detach(|| run_with_workers(workers, || inner.ensure_vocab_map().map(|_| ())).and_then(|r| r))
            .into_py_result()?;
        Ok(map_arrays(py, self.inner.vocab_map().expect("built above")))
    }

    /// Aligns a batch given as flat buffers plus per-text starts and lengths.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (target_ids, target_starts, target_lengths, source_ids, source_starts, source_lengths,
                        topk_ids, topk_logits, topk_starts, *, vocab_align, onehot, workers))]
    fn align<'py>(
        &self,
        py: Python<'py>,
        target_ids: PyReadonlyArray1<'py, i64>,
        target_starts: PyReadonlyArray1<'py, i64>,
        target_lengths: PyReadonlyArray1<'py, i64>,
        source_ids: PyReadonlyArray1<'py, i64>,
        source_starts: PyReadonlyArray1<'py, i64>,
        source_lengths: PyReadonlyArray1<'py, i64>,
        topk_ids: &Bound<'py, PyAny>,
        topk_logits: PyReadonlyArray2<'py, f32>,
        topk_starts: PyReadonlyArray1<'py, i64>,
        vocab_align: &str,
        onehot: &str,
        workers: i64,
    ) -> PyResult<AlignResult<'py>> {
        let vocab_align = match vocab_align {
            "soft" => VocabAlign::Soft,
            "hard" => VocabAlign::Hard,
            other => return errors::invalid("vocab_align", format!("must be 'soft' or 'hard', got {other:?}")),
        };
        let onehot = match onehot {
            "next" => OneHot::Next,
            "current" => OneHot::Current,
            other => return errors::invalid("onehot", format!("must be 'next' or 'current', got {other:?}")),
        };
        let workers = resolve_workers(workers).into_py_result()?;
        let target_starts = usize_vec(&target_starts, "target_ids")?;
        let target_lengths = usize_vec(&target_lengths, "target_ids")?;
        let source_starts = usize_vec(&source_starts, "source_ids")?;
        let source_lengths = usize_vec(&source_lengths, "source_ids")?;
        let topk_starts = usize_vec(&topk_starts, "source_topk_ids")?;
        let k = topk_logits.shape()[1];
        let logits = topk_logits.as_slice()?;
        let inner = &self.inner;

        macro_rules! run {
            ($ids:expr) => {{
                let topk = $ids.as_slice()?;
                if topk.len() != logits.len() {
                    return errors::invalid("source_topk_logits", "shape differs from source_topk_ids".to_string());
                }
                let input = BatchInput {
                    target_ids: target_ids.as_slice()?,
                    target_starts: &target_starts,
                    target_lengths: &target_lengths,
                    source_ids: source_ids.as_slice()?,
                    source_starts: &source_starts,
                    source_lengths: &source_lengths,
                    topk_ids: topk,
                    topk_logits: logits,
                    topk_starts: &topk_starts,
                    k,
                };
                py.detach(|| run_with_workers(workers, || inner.align_batch(&input, vocab_align, onehot)).and_then(|r| r))
            }};
        }
        let out = if let Ok(ids) = topk_ids.extract::<PyReadonlyArray2<'py, i32>>() {
            run!(ids)
        } else if let Ok(ids) = topk_ids.extract::<PyReadonlyArray2<'py, i64>>() {
            run!(ids)
        } else {
            return errors::wrong_type("source_topk_ids", "must be a 2-D int32 or int64 array".to_string());
        }
        .into_py_result()?;

        let shape3 = (out.batch, out.max_length, out.k_out);
        let ids = Array3::from_shape_vec(shape3, out.ids).expect("sized by align_batch").into_pyarray(py);
        let logits = Array3::from_shape_vec(shape3, out.logits).expect("sized by align_batch").into_pyarray(py);
        let status = Array2::from_shape_vec((out.batch, out.max_length), out.status)
            .expect("sized by align_batch")
            .into_pyarray(py);
        Ok((ids, logits, status, counts_dict(py, &out.counts)?))
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(edit_distance, m)?)?;
    m.add_function(wrap_pyfunction!(detect_space_marker, m)?)?;
    m.add_function(wrap_pyfunction!(build_vocab_map, m)?)?;
    m.add_class::<Aligner>()?;
    m.add("STATUS_PADDING", remap::status::PADDING)?;
    m.add("STATUS_EMPTY", remap::status::EMPTY)?;
    m.add("STATUS_MATCHED", remap::status::MATCHED)?;
    m.add("STATUS_ONEHOT", remap::status::ONEHOT)?;
    Ok(())
}
