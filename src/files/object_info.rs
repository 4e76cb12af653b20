//! What an object of a bucket source carries besides its bytes: the headers a web site serves it with and its
//! user metadata, kept in the tree so that a restore into a bucket gives them back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An object's identity (its ETag, for the next backup's comparison) and the metadata a restore puts back.
/// Field names are the S3 header names' (`Content-Type` as `content_type`); absent headers are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// The ETag as the bucket gave it, quotes included.
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// `x-amz-meta-*` user metadata, by name without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}
