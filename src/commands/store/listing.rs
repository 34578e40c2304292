//! `kiln images`, `kiln inspect` and `kiln history`: read-only views of the store, shaped like
//! the docker CLI's output.

use super::human;
use crate::error::CliResult;
use kiln_oci::reference::Reference;
use kiln_oci::{ContainerConfig, Image, ImageSummary, Store};
use serde::Serialize;
use serde_json::{Value, json};

/// Splits a store tag `name:tag` into repository and tag (`<none>` for dangling images).
fn repo_and_tag(tag: Option<&str>) -> (String, String) {
    match tag.and_then(|t| Reference::parse(t).ok()) {
        Some(r) => (r.name(), r.tag().unwrap_or("latest").to_string()),
        None => ("<none>".to_string(), "<none>".to_string()),
    }
}

pub fn images(store: &Store, filter: Option<&str>, json: bool, quiet: bool) -> CliResult<String> {
    let mut summaries = store.list_images()?;
    if let Some(filter) = filter {
        let wanted = Reference::parse(filter).map_err(crate::error::CliError::from)?;
        summaries.retain(|s| {
            let (repo, tag) = repo_and_tag(s.tag.as_deref());
            repo == wanted.name() && wanted.tag().is_none_or(|t| t == tag)
        });
    }
    // Newest first, as docker lists them; ties by name for a stable order.
    summaries.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.tag.cmp(&b.tag)));
    for broken in summaries.iter().filter(|s| s.problem.is_some()) {
        eprintln!(
            "warning: image {} is damaged: {} (run `kiln fsck`)",
            broken
                .tag
                .as_deref()
                .unwrap_or(broken.manifest_digest.as_str()),
            broken.problem.as_deref().unwrap_or("")
        );
    }
    let short_id = |s: &ImageSummary| {
        s.id.as_ref()
            .map_or("<missing>".to_string(), |d| d.short().to_string())
    };
    let mut out = String::new();
    if quiet {
        let mut seen = std::collections::BTreeSet::new();
        for s in &summaries {
            if seen.insert(short_id(s)) {
                out.push_str(&short_id(s));
                out.push('\n');
            }
        }
        return Ok(out);
    }
    if json {
        for s in &summaries {
            let (repository, tag) = repo_and_tag(s.tag.as_deref());
            let line = json!({
                "Containers": "N/A",
                "CreatedAt": s.created.clone().unwrap_or_default(),
                "CreatedSince": human::age_of(s.created.as_deref()),
                "Digest": s.manifest_digest.to_string(),
                "ID": short_id(s),
                "Repository": repository,
                "Tag": tag,
                "Size": human::size(s.size),
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        return Ok(out);
    }
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            let (repository, tag) = repo_and_tag(s.tag.as_deref());
            vec![
                repository,
                tag,
                short_id(s),
                human::age_of(s.created.as_deref()),
                human::size(s.size),
            ]
        })
        .collect();
    Ok(human::table(
        &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        &rows,
    ))
}

/// The object `docker image inspect` prints for one image, with docker's field order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inspect<'a> {
    id: String,
    repo_tags: &'a [String],
    repo_digests: &'a [String],
    parent: &'static str,
    comment: String,
    created: String,
    docker_version: String,
    author: String,
    /// An object even when the image sets nothing, as docker prints it.
    config: ContainerConfig,
    architecture: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    os: &'a str,
    size: u64,
    #[serde(rename = "RootFS")]
    root_fs: InspectRootFs<'a>,
    descriptor: InspectDescriptor,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectRootFs<'a> {
    #[serde(rename = "Type")]
    kind: &'a str,
    layers: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InspectDescriptor {
    media_type: &'static str,
    digest: String,
    size: u64,
}

pub fn inspect(image: &Image) -> Inspect<'_> {
    let config = &image.config;
    Inspect {
        id: image.id.to_string(),
        repo_tags: &image.tags,
        repo_digests: &image.repo_digests,
        parent: "",
        comment: config
            .history
            .last()
            .and_then(|h| h.comment.clone())
            .unwrap_or_default(),
        created: config.created.clone().unwrap_or_default(),
        docker_version: config
            .extra
            .get("docker_version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        author: config.author.clone().unwrap_or_default(),
        config: config.config.clone().unwrap_or_default(),
        architecture: &config.architecture,
        variant: config.variant.as_deref(),
        os: &config.os,
        size: image.size(),
        root_fs: InspectRootFs {
            kind: &config.rootfs.kind,
            layers: &config.rootfs.diff_ids,
        },
        descriptor: InspectDescriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json",
            digest: image.manifest_digest.to_string(),
            size: image.manifest_size,
        },
    }
}

pub fn history(image: &Image, no_trunc: bool, quiet: bool) -> CliResult<String> {
    let layers = image.layers()?;
    let mut layer_sizes = layers.iter().map(|l| l.size);
    let mut rows: Vec<Vec<String>> = Vec::new();
    if image.config.history.is_empty() {
        for layer in &layers {
            rows.push(vec![
                "<missing>".into(),
                "N/A".into(),
                String::new(),
                human::size(layer.size),
                String::new(),
            ]);
        }
    }
    for entry in &image.config.history {
        let size = if entry.empty_layer == Some(true) {
            0
        } else {
            layer_sizes.next().unwrap_or(0)
        };
        let created_by = entry.created_by.clone().unwrap_or_default();
        rows.push(vec![
            "<missing>".into(),
            human::age_of(entry.created.as_deref()),
            if no_trunc {
                created_by
            } else {
                human::ellipsis(&created_by, 45)
            },
            human::size(size),
            entry.comment.clone().unwrap_or_default(),
        ]);
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top[0] = if no_trunc {
            image.id.to_string()
        } else {
            image.id.short().to_string()
        };
    }
    if quiet {
        return Ok(rows.iter().map(|r| format!("{}\n", r[0])).collect());
    }
    Ok(human::table(
        &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &rows,
    ))
}
