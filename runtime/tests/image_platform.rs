//! What the local Docker engine says of an image's platforms (image `warren/busybox:latest`,
//! loaded locally by `scripts/ensure-docker.sh`: no repository digest).

use warren_core::core::image_platform::ImageSource;
use warren_runtime::DockerRuntime;

mod common;
use common::IMAGE;

#[tokio::test]
async fn a_locally_loaded_image_is_reported_with_the_engines_platform() {
    let runtime = DockerRuntime::connect(None)
        .await
        .expect("Docker engine reachable (run scripts/ensure-docker.sh)");
    let report = runtime
        .image_report(IMAGE)
        .await
        .expect("inspect")
        .expect("the image is in the store");
    assert_eq!(report.image, IMAGE);
    assert_eq!(report.source, ImageSource::Local, "{report:?}");
    // Loaded here for this machine: its platform, in the words members announce theirs.
    let here = warren_crdt::Platform::current();
    assert_eq!(report.platforms.len(), 1, "{report:?}");
    assert_eq!(report.platforms[0].os, here.os);
    assert_eq!(report.platforms[0].arch, here.arch);
    // An image the engine does not have: nothing to say.
    assert_eq!(
        runtime
            .image_report("warren/no-such-image:never")
            .await
            .expect("inspect"),
        None
    );
}
