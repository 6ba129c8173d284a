//! `_core.Aligner`: the core's aligner over a `_core.Vocabularies`, as a
//! frozen Python object that holds the MinED map and hands it out as views.

use numpy::ndarray::ArrayView1;
use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use crate::aligner::options::AlignOptions;
use crate::aligner::{self as core};
use crate::py::batch::{self, AlignResult, BatchArrays};
use crate::py::errors::IntoPyResult;
use crate::py::options::{self, choice};
use crate::py::vocabularies::Vocabularies;
use crate::vocab_map::VocabMap;

/// Two vocabularies prepared for alignment; immutable but for the maps built on
/// first use, and safe to share between threads.
#[pyclass(frozen, module = "fusellm_fast._core")]
pub(crate) struct Aligner {
    inner: core::Aligner,
}

type MapArrays<'py> = (Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i32>>);

impl Aligner {
    /// The arrays of the MinED map as read-only numpy arrays over the memory
    /// of `map`, each keeping this object alive.
    fn map_views<'py>(this: &Bound<'py, Self>, map: &VocabMap) -> MapArrays<'py> {
        let view = |values: &[i32]| {
            // SAFETY: the map lives in the aligner's `OnceLock`, which is set
            // once and never changed in this frozen object, so its arrays stay
            // where they are while the object (each view's base) lives.
            let array = unsafe { PyArray1::borrow_from_array(&ArrayView1::from(values), this.clone().into_any()) };
            array.readwrite().make_nonwriteable();
            array
        };
        (view(&map.target_ids), view(&map.distances))
    }
}

#[pymethods]
impl Aligner {
    #[new]
    fn new(py: Python<'_>, vocabularies: &Bound<'_, Vocabularies>) -> PyResult<Self> {
        let vocabularies = vocabularies.get().inner.clone();
        let inner = py.detach(|| core::Aligner::with_vocabularies(vocabularies)).into_py_result()?;
        Ok(Aligner { inner })
    }

    /// The byte-prefix image of every source id (-1: none).
    #[pyo3(signature = (*, workers))]
    fn prefix_map<'py>(&self, py: Python<'py>, workers: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<i32>>> {
        let workers = options::workers(workers)?;
        let map = py.detach(|| self.inner.prefix_map(workers).map(<[i32]>::to_vec)).into_py_result()?;
        Ok(map.into_pyarray(py))
    }

    /// `(target_ids, distances)` of the MinED map, read-only views of the map
    /// this object holds, or None before it is built.
    fn vocab_map<'py>(this: &Bound<'py, Self>) -> Option<MapArrays<'py>> {
        this.get().inner.vocab_map().map(|map| Self::map_views(this, map))
    }

    /// Uses a MinED map built elsewhere (copied into this object).
    fn set_vocab_map(&self, target_ids: PyReadonlyArray1<'_, i32>, distances: PyReadonlyArray1<'_, i32>) -> PyResult<()> {
        let map = VocabMap { target_ids: target_ids.as_slice()?.to_vec(), distances: distances.as_slice()?.to_vec() };
        self.inner.set_vocab_map(map).into_py_result()
    }

    /// Builds the MinED map unless present and returns it as [`Aligner::vocab_map`] does.
    #[pyo3(signature = (*, workers))]
    fn ensure_vocab_map<'py>(this: &Bound<'py, Self>, workers: &Bound<'py, PyAny>) -> PyResult<MapArrays<'py>> {
        let workers = options::workers(workers)?;
        let inner = &this.get().inner;
        let map = this.py().detach(|| inner.ensure_vocab_map(workers)).into_py_result()?;
        Ok(Self::map_views(this, map))
    }

    /// Aligns a batch: id sequences as flat buffers plus per-text starts and
    /// lengths, top-k lists as one C-contiguous `[rows, k]` array per text (int32
    /// or int64 ids, the same for every text; float32 logits), all borrowed.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (target_ids, target_starts, target_lengths, source_ids, source_starts, source_lengths,
                        topk_ids, topk_logits, *, k, vocab_align, onehot, workers, method, candidates, values))]
    fn align<'py>(
        &self,
        py: Python<'py>,
        target_ids: PyReadonlyArray1<'py, i64>,
        target_starts: PyReadonlyArray1<'py, i64>,
        target_lengths: PyReadonlyArray1<'py, i64>,
        source_ids: PyReadonlyArray1<'py, i64>,
        source_starts: PyReadonlyArray1<'py, i64>,
        source_lengths: PyReadonlyArray1<'py, i64>,
        topk_ids: Vec<Bound<'py, PyAny>>,
        topk_logits: Vec<PyReadonlyArray2<'py, f32>>,
        k: usize,
        vocab_align: &Bound<'py, PyAny>,
        onehot: &Bound<'py, PyAny>,
        workers: &Bound<'py, PyAny>,
        method: &Bound<'py, PyAny>,
        candidates: &Bound<'py, PyAny>,
        values: &Bound<'py, PyAny>,
    ) -> PyResult<AlignResult<'py>> {
        let options = AlignOptions {
            vocab_align: choice(vocab_align, "vocab_align")?,
            onehot: choice(onehot, "onehot")?,
            method: choice(method, "method")?,
            candidates: choice(candidates, "candidates")?,
            values: choice(values, "values")?,
        };
        let workers = options::workers(workers)?;
        let arrays = BatchArrays {
            target_ids,
            target_starts,
            target_lengths,
            source_ids,
            source_starts,
            source_lengths,
            topk_ids,
            topk_logits,
            k,
        };
        batch::align(py, &self.inner, &arrays, &options, workers)
    }
}
