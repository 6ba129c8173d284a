//! Functions on token strings: their bytes and their edit distance.

use std::collections::HashSet;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::edit_distance as distance;
use crate::py::errors::{self, IntoPyResult};
use crate::py::options::optional_choice;
use crate::text::family::Family;
use crate::text::token_bytes::append_token_bytes;

/// Levenshtein distance between two strings over Unicode code points.
#[pyfunction]
pub(crate) fn edit_distance(a: &str, b: &str) -> u32 {
    distance::edit_distance(a, b)
}

/// The exact bytes every token stands for (special ids: none).
#[pyfunction]
#[pyo3(signature = (tokens, *, family = None, special_ids = Vec::new()))]
pub(crate) fn token_bytes<'py>(
    py: Python<'py>,
    tokens: Vec<String>,
    family: Option<&Bound<'py, PyAny>>,
    special_ids: Vec<u32>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let family = match optional_choice(family, "family")? {
        Some(family) => family,
        None => Family::detect(&tokens, "family").into_py_result()?,
    };
    let special: HashSet<u32> = special_ids.iter().copied().collect();
    if let Some(&id) = special.iter().find(|&&id| id as usize >= tokens.len()) {
        return errors::invalid("special_ids", format!("id {id} is outside the vocabulary (size {})", tokens.len()));
    }
    Ok(tokens
        .iter()
        .enumerate()
        .map(|(id, t)| {
            let mut out = Vec::new();
            if !special.contains(&(id as u32)) {
                append_token_bytes(t, family, &mut out);
            }
            PyBytes::new(py, &out)
        })
        .collect())
}
