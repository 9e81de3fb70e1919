//! The body of format 1 as it is on disk. Kept apart from the API types so that names
//! arrive as plain strings and are checked with the path of the field they came from
//! (`workloads[1].images[0].name`), and so that the API types cannot be deserialised
//! around that check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    rfc3339_utc, Checksum, GenerationId, GenerationState, ImageFile, ImageLink, ImageName,
    LinkName, LinkTarget, Manifest, SourceSystem, ValidationError, Workload, WorkloadKind,
    WorkloadName, WorkloadState,
};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Body {
    generation: String,
    state: GenerationState,
    created: Created,
    source: Source,
    kernel_features: Vec<String>,
    workloads: Vec<WireWorkload>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Created {
    unix: u64,
    rfc3339: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    kernel_release: String,
    proc_version: String,
    kernel_config_checksum: Option<String>,
    criu_version: String,
    glibc_version: String,
    cpu: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireWorkload {
    name: String,
    kind: WorkloadKind,
    state: WorkloadState,
    root_pid: u32,
    pids: Vec<u32>,
    unit: Option<String>,
    cgroup: Option<String>,
    command_line: Vec<String>,
    options: BTreeMap<String, String>,
    images: Vec<WireImage>,
    /// Since 1.1; a 1.0 workload has none.
    #[serde(default)]
    links: Vec<WireLink>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireImage {
    name: String,
    size: u64,
    checksum: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLink {
    name: String,
    target: String,
}

impl Body {
    pub(super) fn from_manifest(m: &Manifest) -> Body {
        Body {
            generation: m.generation.to_string(),
            state: m.state,
            created: Created {
                unix: m.created_unix,
                rfc3339: m.created_rfc3339(),
            },
            source: Source {
                kernel_release: m.source.kernel_release.clone(),
                proc_version: m.source.proc_version.clone(),
                kernel_config_checksum: m
                    .source
                    .kernel_config_checksum
                    .as_ref()
                    .map(ToString::to_string),
                criu_version: m.source.criu_version.clone(),
                glibc_version: m.source.glibc_version.clone(),
                cpu: m.source.cpu.clone(),
            },
            kernel_features: m.kernel_features.clone(),
            workloads: m
                .workloads
                .iter()
                .map(|w| WireWorkload {
                    name: w.name.to_string(),
                    kind: w.kind,
                    state: w.state,
                    root_pid: w.root_pid,
                    pids: w.pids.clone(),
                    unit: w.unit.clone(),
                    cgroup: w.cgroup.clone(),
                    command_line: w.command_line.clone(),
                    options: w.options.clone(),
                    images: w
                        .images
                        .iter()
                        .map(|i| WireImage {
                            name: i.name.to_string(),
                            size: i.size,
                            checksum: i.checksum.to_string(),
                        })
                        .collect(),
                    links: w
                        .links
                        .iter()
                        .map(|l| WireLink {
                            name: l.name.to_string(),
                            target: l.target.to_string(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Checks every name with the path of its field, then the whole manifest.
    pub(super) fn into_manifest(self) -> Result<Manifest, ValidationError> {
        let generation = GenerationId::new(self.generation).map_err(|e| e.at("generation"))?;
        let kernel_config_checksum = self
            .source
            .kernel_config_checksum
            .map(Checksum::new)
            .transpose()
            .map_err(|e| e.at("source.kernel_config_checksum"))?;
        let mut workloads = Vec::with_capacity(self.workloads.len());
        for (i, w) in self.workloads.into_iter().enumerate() {
            let at = format!("workloads[{i}]");
            let name = WorkloadName::new(w.name).map_err(|e| e.at(format!("{at}.name")))?;
            let mut images = Vec::with_capacity(w.images.len());
            for (j, image) in w.images.into_iter().enumerate() {
                let at = format!("{at}.images[{j}]");
                images.push(ImageFile {
                    name: ImageName::new(image.name).map_err(|e| e.at(format!("{at}.name")))?,
                    size: image.size,
                    checksum: Checksum::new(image.checksum)
                        .map_err(|e| e.at(format!("{at}.checksum")))?,
                });
            }
            let mut links = Vec::with_capacity(w.links.len());
            for (j, link) in w.links.into_iter().enumerate() {
                let at = format!("{at}.links[{j}]");
                links.push(ImageLink {
                    name: LinkName::new(link.name).map_err(|e| e.at(format!("{at}.name")))?,
                    target: LinkTarget::new(link.target)
                        .map_err(|e| e.at(format!("{at}.target")))?,
                });
            }
            workloads.push(Workload {
                name,
                kind: w.kind,
                state: w.state,
                root_pid: w.root_pid,
                pids: w.pids,
                unit: w.unit,
                cgroup: w.cgroup,
                command_line: w.command_line,
                options: w.options,
                images,
                links,
            });
        }
        let manifest = Manifest {
            generation,
            state: self.state,
            created_unix: self.created.unix,
            source: SourceSystem {
                kernel_release: self.source.kernel_release,
                proc_version: self.source.proc_version,
                kernel_config_checksum,
                criu_version: self.source.criu_version,
                glibc_version: self.source.glibc_version,
                cpu: self.source.cpu,
            },
            kernel_features: self.kernel_features,
            workloads,
        };
        manifest.validate()?;
        // After validate, which bounds the time to what RFC 3339 can write.
        let expected = rfc3339_utc(manifest.created_unix);
        if self.created.rfc3339 != expected {
            return Err(ValidationError::new(
                "created.rfc3339",
                &self.created.rfc3339,
                format!("does not match created.unix ({expected})"),
            ));
        }
        Ok(manifest)
    }
}
