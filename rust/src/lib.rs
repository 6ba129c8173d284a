//! Fast building blocks for knowledge fusion of LLMs (FuseLLM: Wan et al.,
//! "Knowledge Fusion of Large Language Models", ICLR 2024, arXiv 2401.10491):
//! minimum-edit-distance vocabulary mapping, token alignment between two
//! tokenizations of the same text, and remapping of top-k distributions onto the
//! target vocabulary.

pub mod align;
pub mod candidates;
pub mod edit_distance;
pub mod error;
pub mod normalize;
pub mod parallel;
pub mod remap;
pub mod token_cost;
pub mod vocab;
pub mod vocab_map;

#[cfg(feature = "python")]
mod py;
