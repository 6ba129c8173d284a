//! A batch across the boundary: numpy arrays borrowed as the core's
//! [`BatchInput`] without copying, and the [`AlignedOutput`] moved into numpy
//! arrays without copying.

use numpy::ndarray::{Array2, Array3};
use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::aligner::batch::{AlignCounts, AlignedOutput, BatchInput, TokenId};
use crate::aligner::options::{AlignOptions, Choice};
use crate::aligner::Aligner;
use crate::error::Error;
use crate::parallel::Workers;
use crate::py::errors::{self, IntoPyResult};

/// The arrays of a batch as `Aligner.align` takes them: id sequences as flat
/// buffers plus per-text starts and lengths, top-k lists as one C-contiguous
/// `[rows, k]` array per text (int32 or int64 ids, the same for every text;
/// float32 logits).
pub(crate) struct BatchArrays<'py> {
    pub target_ids: PyReadonlyArray1<'py, i64>,
    pub target_starts: PyReadonlyArray1<'py, i64>,
    pub target_lengths: PyReadonlyArray1<'py, i64>,
    pub source_ids: PyReadonlyArray1<'py, i64>,
    pub source_starts: PyReadonlyArray1<'py, i64>,
    pub source_lengths: PyReadonlyArray1<'py, i64>,
    pub topk_ids: Vec<Bound<'py, PyAny>>,
    pub topk_logits: Vec<PyReadonlyArray2<'py, f32>>,
    pub k: usize,
}

/// ids, logits, status, paired source positions, counts, what the values are.
pub(crate) type AlignResult<'py> = (
    Bound<'py, PyArray3<i32>>,
    Bound<'py, PyArray3<f32>>,
    Bound<'py, PyArray2<i8>>,
    Bound<'py, PyArray2<i32>>,
    Bound<'py, PyDict>,
    &'static str,
);

/// Aligns the batch with the GIL released.
pub(crate) fn align<'py>(
    py: Python<'py>,
    aligner: &Aligner,
    arrays: &BatchArrays<'py>,
    options: &AlignOptions,
    workers: Workers,
) -> PyResult<AlignResult<'py>> {
    let out = if let Some(id_arrays) = arrays_of::<i32>(&arrays.topk_ids) {
        align_with(py, aligner, arrays, &id_arrays, options, workers)?
    } else if let Some(id_arrays) = arrays_of::<i64>(&arrays.topk_ids) {
        align_with(py, aligner, arrays, &id_arrays, options, workers)?
    } else {
        return errors::wrong_type("source_topk_ids", "must be 2-D C-contiguous arrays, all int32 or all int64".into());
    };
    let shape3 = (out.batch, out.max_length, out.k_out);
    let ids = Array3::from_shape_vec(shape3, out.ids).expect("sized by align_batch").into_pyarray(py);
    let logits = Array3::from_shape_vec(shape3, out.logits).expect("sized by align_batch").into_pyarray(py);
    let shape2 = (out.batch, out.max_length);
    let status = Array2::from_shape_vec(shape2, out.status).expect("sized by align_batch").into_pyarray(py);
    let source_positions =
        Array2::from_shape_vec(shape2, out.source_positions).expect("sized by align_batch").into_pyarray(py);
    let counts = counts_dict(py, &out.counts)?;
    Ok((ids, logits, status, source_positions, counts, options.values_are().name()))
}

fn align_with<'py, C: TokenId + numpy::Element>(
    py: Python<'py>,
    aligner: &Aligner,
    arrays: &BatchArrays<'py>,
    id_arrays: &[PyReadonlyArray2<'py, C>],
    options: &AlignOptions,
    workers: Workers,
) -> PyResult<AlignedOutput> {
    let target_starts = usize_vec(&arrays.target_starts, "target_ids")?;
    let target_lengths = usize_vec(&arrays.target_lengths, "target_ids")?;
    let source_starts = usize_vec(&arrays.source_starts, "source_ids")?;
    let source_lengths = usize_vec(&arrays.source_lengths, "source_ids")?;
    let input = BatchInput {
        target_ids: arrays.target_ids.as_slice()?,
        target_starts: &target_starts,
        target_lengths: &target_lengths,
        source_ids: arrays.source_ids.as_slice()?,
        source_starts: &source_starts,
        source_lengths: &source_lengths,
        topk_ids: rows_of_width(id_arrays, arrays.k, "source_topk_ids")?,
        topk_logits: rows_of_width(&arrays.topk_logits, arrays.k, "source_topk_logits")?,
        k: arrays.k,
    };
    py.detach(|| aligner.align_batch(&input, options, workers)).into_py_result()
}

fn counts_dict<'py>(py: Python<'py>, counts: &AlignCounts) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("positions", counts.positions)?;
    d.set_item("matched", counts.matched)?;
    d.set_item("onehot", counts.onehot)?;
    d.set_item("empty", counts.empty)?;
    d.set_item("dropped_candidates", counts.dropped_candidates)?;
    d.set_item("fallback_texts", counts.fallback_texts)?;
    d.set_item("kept_mass", counts.kept_mass)?;
    Ok(d)
}

fn usize_vec(a: &PyReadonlyArray1<'_, i64>, arg: &'static str) -> PyResult<Vec<usize>> {
    a.as_slice()?
        .iter()
        .map(|&v| usize::try_from(v))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::invalid(arg, "offsets and lengths must be non-negative"))
        .into_py_result()
}

/// Every item borrowed as a 2-D array of `T`, or `None` if one is not.
fn arrays_of<'py, T: numpy::Element>(items: &[Bound<'py, PyAny>]) -> Option<Vec<PyReadonlyArray2<'py, T>>> {
    items.iter().map(|item| item.extract::<PyReadonlyArray2<'py, T>>().ok()).collect()
}

/// The row-major elements of each array, checked to have rows of `k` values.
fn rows_of_width<'a, T: numpy::Element>(arrays: &'a [PyReadonlyArray2<'_, T>], k: usize, arg: &str) -> PyResult<Vec<&'a [T]>> {
    arrays
        .iter()
        .enumerate()
        .map(|(b, array)| match array.shape()[1] {
            width if width == k || array.shape()[0] == 0 => Ok(array.as_slice()?),
            width => errors::invalid(arg, format!("text {b} has rows of {width} candidates, expected {k}")),
        })
        .collect()
}
