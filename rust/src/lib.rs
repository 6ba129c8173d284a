//! Fast building blocks for knowledge fusion of LLMs (FuseLLM: Wan et al.,
//! "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv 2401.10491),
//! one module per step of the method:
//!
//! - [`text`]: what token strings spell (space markers, families, bytes, symbols);
//! - [`vocab_map`]: step 1, the minimum-edit-distance (MinED) vocabulary map;
//! - [`pairing`]: step 2, token alignment between two tokenizations of a text;
//! - [`remap`]: step 3, top-k distributions carried over to the target vocabulary;
//! - [`aligner`]: the vocabularies prepared once and batches aligned with them;
//! - [`parallel`]: the threads a call runs on;
//! - [`limits`]: the sizes the core can address.

pub mod aligner;
pub mod edit_distance;
pub mod error;
pub mod limits;
pub mod pairing;
pub mod parallel;
pub mod remap;
pub mod text;
pub mod vocab_map;

#[cfg(feature = "python")]
mod py;
