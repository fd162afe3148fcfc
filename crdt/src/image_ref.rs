//! Docker image reference validation (the grammar of `distribution/reference`): one rule
//! for every place a spec enters — [`crate::ServiceSpec::validate`] (the API, patches, and
//! a node reading a spec from the document) and the runtime before it asks an engine.

/// Longest repository name (domain and path, without tag or digest) Docker accepts.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// Longest tag Docker accepts.
const TAG_LENGTH_MAX: usize = 128;

/// A syntactically valid reference split into its parts (all borrowed from the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageReference<'a> {
    /// `[domain/]path`, e.g. `localhost:5000/a/b` or `busybox`.
    pub name: &'a str,
    /// The tag after `:`, if any.
    pub tag: Option<&'a str>,
    /// The digest after `@` (`algorithm:hex`), if any.
    pub digest: Option<&'a str>,
}

/// Parses a Docker image reference by Docker's reference grammar
/// (`distribution/reference`):
///
/// ```text
/// reference := name [ ":" tag ] [ "@" digest ]
/// name      := [ domain "/" ] path-component { "/" path-component }      (≤ 255 chars)
/// domain    := host [ ":" port ]            host: DNS name or [IPv6], port: digits
/// path-component := [a-z0-9]+ { ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ }
/// tag       := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
/// digest    := algorithm ":" hex     (sha256: 64, sha384: 96, sha512: 128 lowercase hex)
/// ```
///
/// As in Docker, the first `/`-separated component is a registry host only when it
/// contains `.` or `:`, is `localhost`, or has an uppercase letter; otherwise it is part of
/// the (lowercase-only) path. Examples of valid references: `busybox`,
/// `warren/busybox:latest`, `localhost:5000/a/b:1.0`, `a@sha256:<64 hex>`.
///
/// Pure: nothing is sent to an engine and no image needs to exist.
///
/// # Errors
///
/// A reason that says which part is wrong and what is allowed there (e.g. "repository name
/// must be lowercase", "tag is 129 characters long; at most 128 are allowed").
pub fn parse_image_reference(image: &str) -> Result<ImageReference<'_>, String> {
    parse(image)
}

fn parse(image: &str) -> Result<ImageReference<'_>, String> {
    if image.is_empty() {
        return Err(
            "the reference is empty; give an image such as \"busybox\" or \"warren/busybox:latest\""
                .to_string(),
        );
    }
    if let Some((i, c)) = image
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "contains {} at byte {i}; image references cannot contain spaces or control characters",
            if c.is_whitespace() {
                "whitespace"
            } else {
                "a control character"
            }
        ));
    }

    // Split off the digest.
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => {
            if digest.contains('@') {
                return Err("contains more than one '@'; only one digest is allowed".to_string());
            }
            validate_digest(digest)?;
            (rest, Some(digest))
        }
        None => (image, None),
    };

    // Split off the tag: a ':' after the last '/' (an earlier ':' is a registry port).
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|s| colon > s) => {
            let tag = &rest[colon + 1..];
            validate_tag(tag)?;
            (&rest[..colon], Some(tag))
        }
        _ => (rest, None),
    };

    validate_name(name)?;
    Ok(ImageReference { name, tag, digest })
}

fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(
            "the repository name is empty; put a name such as \"busybox\" before the ':' or '@'"
                .to_string(),
        );
    }
    let len = name.chars().count();
    if len > NAME_TOTAL_LENGTH_MAX {
        return Err(format!(
            "the repository name is {len} characters long; at most {NAME_TOTAL_LENGTH_MAX} are allowed"
        ));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        let is_domain = first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase());
        if is_domain {
            validate_domain(first)?;
            components.remove(0);
        }
    }
    for component in components {
        validate_path_component(component, name)?;
    }
    Ok(())
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(after_bracket) = domain.strip_prefix('[') {
        // [IPv6]:port
        let Some(end) = after_bracket.find(']') else {
            return Err(format!(
                "registry host {domain:?} opens '[' for an IPv6 address but never closes it"
            ));
        };
        let addr = &after_bracket[..end];
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!(
                "registry host {domain:?}: {addr:?} is not an IPv6 address"
            ));
        }
        let after = &after_bracket[end + 1..];
        match after.strip_prefix(':') {
            Some(port) => (None, Some(port)),
            None if after.is_empty() => (None, None),
            None => {
                return Err(format!(
                    "registry host {domain:?}: unexpected {after:?} after the IPv6 address"
                ))
            }
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err(format!("registry host {domain:?} has an empty host name"));
        }
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "registry host {domain:?} is not a valid host name (labels of letters, digits \
                     and inner '-', separated by '.')"
                ));
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "registry host {domain:?} has an invalid port {port:?}; the port must be digits"
            ));
        }
    }
    Ok(())
}

fn validate_path_component(component: &str, name: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err(format!(
            "the repository name {name:?} has an empty path component (a leading, trailing or doubled '/')"
        ));
    }
    if let Some(c) = component.chars().find(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "repository name must be lowercase (found {c:?} in {component:?}); only a registry \
             host may contain uppercase letters"
        ));
    }
    if let Some(c) = component
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid character {c:?} in repository name component {component:?}; allowed are \
             a-z, 0-9 and the separators '.', '_', '__', '-'"
        ));
    }
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bad_separator = || {
        format!(
            "repository name component {component:?} must start and end with a letter or digit, \
             and separators between them must be '.', '_', '__' or dashes"
        )
    };
    let bytes: Vec<char> = component.chars().collect();
    if !bytes.first().copied().is_some_and(is_alnum) || !bytes.last().copied().is_some_and(is_alnum)
    {
        return Err(bad_separator());
    }
    // Check every maximal run of separator characters.
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let run: String = bytes[start..i].iter().collect();
        let ok = run == "." || run == "_" || run == "__" || run.chars().all(|c| c == '-');
        if !ok {
            return Err(bad_separator());
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err(
            "ends with ':' but no tag follows; write e.g. \":latest\" or drop the ':'".to_string(),
        );
    }
    let len = tag.chars().count();
    if len > TAG_LENGTH_MAX {
        return Err(format!(
            "tag is {len} characters long; at most {TAG_LENGTH_MAX} are allowed"
        ));
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    if !chars.next().is_some_and(word) {
        return Err(format!(
            "tag {tag:?} must start with a letter, digit or '_' (a ':' cannot follow another ':')"
        ));
    }
    if let Some(c) = chars.find(|&c| !(word(c) || c == '.' || c == '-')) {
        return Err(format!(
            "invalid character {c:?} in tag {tag:?}; tags may contain letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest {digest:?} must have the form sha256:<64 hex characters>"
        ));
    };
    let expected_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        "" => {
            return Err(format!(
                "digest {digest:?} has no algorithm; write sha256:<64 hex characters>"
            ))
        }
        other => {
            return Err(format!(
                "unsupported digest algorithm {other:?}; use sha256, sha384 or sha512"
            ))
        }
    };
    if hex.len() != expected_len
        || !hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(format!(
            "{algorithm} digest must be exactly {expected_len} lowercase hex characters (got {:?})",
            hex
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(image: &str) -> String {
        match parse_image_reference(image) {
            Err(reason) => reason,
            Ok(r) => panic!("{image:?}: expected an error, got {r:?}"),
        }
    }

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn valid_references() {
        let digest_ref = format!("a@sha256:{HEX64}");
        let full = format!("localhost:5000/a/b:1.0@sha256:{HEX64}");
        for image in [
            "warren/busybox:latest",
            "busybox",
            "localhost:5000/a/b:1.0",
            digest_ref.as_str(),
            full.as_str(),
            "ghcr.io/owner/repo_name/sub-dir:v1.2.3-rc_1",
            "registry.example.com:443/a__b/c.d/e---f",
            "localhost/a",
            "[::1]:5000/a:b",
            "Registry.Example.COM/a",
            "a:_tag",
        ] {
            assert!(
                parse_image_reference(image).is_ok(),
                "{image:?} should be valid: {:?}",
                parse_image_reference(image)
            );
        }
        let tag128 = format!("a:{}", "t".repeat(128));
        assert!(parse_image_reference(&tag128).is_ok());
    }

    #[test]
    fn parts_are_split() {
        let p = parse_image_reference("localhost:5000/a/b:1.0").expect("valid");
        assert_eq!(p.name, "localhost:5000/a/b");
        assert_eq!(p.tag, Some("1.0"));
        assert_eq!(p.digest, None);
        let p = parse_image_reference("localhost:5000/a").expect("valid");
        assert_eq!((p.name, p.tag), ("localhost:5000/a", None));
        let d = format!("a@sha256:{HEX64}");
        let p = parse_image_reference(&d).expect("valid");
        assert_eq!(p.name, "a");
        assert_eq!(p.tag, None);
        assert_eq!(p.digest, Some(&d[2..]));
    }

    #[test]
    fn empty_is_invalid() {
        assert!(reason("").contains("empty"));
    }

    #[test]
    fn uppercase_is_invalid() {
        assert!(reason("Busybox").contains("lowercase"));
        assert!(reason("warren/BusyBox:latest").contains("lowercase"));
    }

    #[test]
    fn double_colon_is_invalid() {
        let r = reason("a::b");
        assert!(r.contains("':'"), "{r}");
    }

    #[test]
    fn spaces_are_invalid() {
        assert!(reason("busy box").contains("whitespace"));
        assert!(reason(" busybox").contains("whitespace"));
        assert!(reason("busybox:latest ").contains("whitespace"));
    }

    #[test]
    fn trailing_colon_is_invalid() {
        assert!(reason("busybox:").contains("no tag follows"));
        assert!(reason("localhost:5000/a:").contains("no tag follows"));
    }

    #[test]
    fn long_tag_is_invalid() {
        let image = format!("busybox:{}", "a".repeat(129));
        assert!(reason(&image).contains("at most 128"));
    }

    #[test]
    fn other_invalid_references() {
        assert!(reason(":latest").contains("repository name is empty"));
        assert!(reason("a//b").contains("empty path component"));
        assert!(reason("a/").contains("empty path component"));
        assert!(reason("-a").contains("must start and end"));
        assert!(reason("a..b").contains("separators"));
        assert!(reason("a___b").contains("separators"));
        assert!(reason("a:-tag").contains("must start with"));
        assert!(reason("a:t@g").contains("digest"));
        assert!(reason("a@sha256:abc").contains("exactly 64"));
        assert!(reason(&format!("a@md5:{HEX64}")).contains("unsupported digest algorithm"));
        assert!(reason(&format!("a@sha256:{}", HEX64.to_uppercase())).contains("lowercase hex"));
        assert!(reason("localhost:port/a").contains("invalid port"));
        assert!(reason("exa_mple.com/a").contains("not a valid host name"));
        assert!(reason(&"a".repeat(256)).contains("at most 255"));
        assert!(reason("a$b").contains("invalid character '$'"));
    }
}
