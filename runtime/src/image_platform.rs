//! What the engine knows of an image's platforms, for the scheduler's architecture rule
//! ([`warren_core::core::image_platform`], whose module doc says what each answer means).

use std::time::Duration;

use bollard::models::{DistributionInspect, ImageInspect};
use warren_core::core::image_platform::{
    ImagePlatform, ImageReport, ImageSource, MAX_IMAGE_PLATFORMS,
};

use crate::docker::DockerRuntime;
use crate::error::status_code;
use crate::RuntimeError;

/// Longest the engine may take to ask the registry for an image's platforms.
const REGISTRY_DEADLINE: Duration = Duration::from_secs(5);

impl DockerRuntime {
    /// What this engine knows of `image`'s platforms: `None` when the image is not in its
    /// store. A locally built or loaded image (no repository digest) is
    /// [`ImageSource::Local`]; a pulled one is asked of the registry through the engine
    /// (`/distribution/{image}/json`, within 5 s) and is [`ImageSource::Registry`] when that
    /// answers, else [`ImageSource::Pulled`] with the local platform only.
    ///
    /// Errors: [`RuntimeError`] when the engine cannot inspect the image (the registry's
    /// silence is no error).
    pub async fn image_report(&self, image: &str) -> Result<Option<ImageReport>, RuntimeError> {
        let inspect = match self.docker().inspect_image(image).await {
            Ok(i) => i,
            Err(e) if status_code(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.err("inspect_image", e)),
        };
        let registry = if pulled(&inspect) {
            tokio::time::timeout(
                REGISTRY_DEADLINE,
                self.docker().inspect_registry_image(image, None),
            )
            .await
            .ok()
            .and_then(Result::ok)
        } else {
            None
        };
        Ok(Some(image_report(image, &inspect, registry.as_ref())))
    }
}

/// Whether the engine got `inspect`'s image from a registry (it has a repository digest).
fn pulled(inspect: &ImageInspect) -> bool {
    inspect.repo_digests.as_ref().is_some_and(|d| !d.is_empty())
}

/// The report of `image` from the engine's inspect and, for a pulled image, the registry's
/// answer (its platforms, when it lists any, are the whole set).
pub(crate) fn image_report(
    image: &str,
    inspect: &ImageInspect,
    registry: Option<&DistributionInspect>,
) -> ImageReport {
    let word = |s: &Option<String>| s.clone().unwrap_or_default();
    let listed: Vec<ImagePlatform> = registry
        .map(|r| {
            r.platforms
                .iter()
                .take(MAX_IMAGE_PLATFORMS)
                .map(|p| ImagePlatform {
                    os: word(&p.os),
                    arch: word(&p.architecture),
                    variant: word(&p.variant),
                })
                .filter(|p| !p.os.is_empty() && !p.arch.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let own = ImagePlatform {
        os: word(&inspect.os),
        arch: word(&inspect.architecture),
        variant: word(&inspect.variant),
    };
    let (source, platforms) = if !listed.is_empty() {
        (ImageSource::Registry, listed)
    } else if pulled(inspect) {
        (ImageSource::Pulled, vec![own])
    } else {
        (ImageSource::Local, vec![own])
    };
    ImageReport {
        image: image.to_string(),
        source,
        platforms,
    }
    .bounded()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::OciPlatform;

    fn inspect(arch: &str, digests: &[&str]) -> ImageInspect {
        ImageInspect {
            os: Some("linux".into()),
            architecture: Some(arch.into()),
            repo_digests: Some(digests.iter().map(|d| d.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn built_pulled_and_registry_answers_become_reports() {
        let built = image_report("warren-test:latest", &inspect("amd64", &[]), None);
        assert_eq!(built.source, ImageSource::Local);
        assert_eq!(built.platforms[0].to_string(), "linux/amd64");

        let pulled = inspect("arm64", &["busybox@sha256:abc"]);
        let alone = image_report("busybox:1", &pulled, None);
        assert_eq!(alone.source, ImageSource::Pulled);
        assert_eq!(alone.platforms[0].arch, "arm64");

        let registry = DistributionInspect {
            platforms: vec![
                OciPlatform {
                    os: Some("linux".into()),
                    architecture: Some("amd64".into()),
                    ..Default::default()
                },
                OciPlatform {
                    os: Some("linux".into()),
                    architecture: Some("arm".into()),
                    variant: Some("v7".into()),
                    ..Default::default()
                },
                // Nothing usable in it: skipped.
                OciPlatform::default(),
            ],
            ..Default::default()
        };
        let all = image_report("busybox:1", &pulled, Some(&registry));
        assert_eq!(all.source, ImageSource::Registry);
        let words: Vec<String> = all.platforms.iter().map(ToString::to_string).collect();
        assert_eq!(words, vec!["linux/amd64", "linux/arm/v7"]);
        // A registry answer listing nothing leaves the pulled copy's word.
        let empty = DistributionInspect::default();
        assert_eq!(
            image_report("busybox:1", &pulled, Some(&empty)).source,
            ImageSource::Pulled
        );
    }
}
