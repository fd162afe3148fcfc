//! Names as a container sees them: the answers busybox `nslookup` prints.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

/// The IPv6 addresses in `stdout`, the output of busybox `nslookup -type=AAAA NAME` (the
/// test image's): the `Address:` lines of its answers, each after a `Name:` line. The
/// `Server:` block before the answers (`Address: [fd00::1]:53`, `127.0.0.11:53`) names
/// the server asked, not an answer, and is left out; so are lines that hold no IPv6
/// address. No answer (NXDOMAIN, no AAAA record, no server reached) is the empty set.
///
/// ```
/// let out = "Server:\t\tfd00::1\nAddress:\t[fd00::1]:53\n\nName:\tweb.warren\n\
///            Address: fd00::8000:2\nName:\tweb.warren\nAddress: fd00::8000:3\n";
/// let ips = warren_testkit::nslookup_addresses(out);
/// assert_eq!(ips.len(), 2);
/// assert!(ips.contains(&"fd00::8000:3".parse().unwrap()));
/// ```
pub fn nslookup_addresses(stdout: &str) -> BTreeSet<Ipv6Addr> {
    let mut answers = false;
    let mut out = BTreeSet::new();
    for line in stdout.lines().map(str::trim) {
        if line.starts_with("Name:") {
            answers = true;
        } else if let Some(address) = line.strip_prefix("Address:").filter(|_| answers) {
            if let Ok(ip) = address.trim().parse() {
                out.insert(ip);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_and_the_server_does_not() {
        // The server as an address that parses, to be sure it is left out by position.
        let out = "Server:\t\tfd00::1\nAddress:\tfd00::1\n\nNon-authoritative answer:\n\
                   Name:\tweb.warren\nAddress: fd00::8000:2\n\nName:\tweb.warren\n\
                   Address: 192.0.2.1\n";
        let want: BTreeSet<Ipv6Addr> = ["fd00::8000:2".parse().expect("ip")].into();
        assert_eq!(nslookup_addresses(out), want);
    }

    #[test]
    fn no_answer_is_empty() {
        let nxdomain = "Server:\t\tfd00::1\nAddress:\t[fd00::1]:53\n\n\
                        ** server can't find nope.warren: NXDOMAIN\n";
        assert!(nslookup_addresses(nxdomain).is_empty());
        assert!(nslookup_addresses("").is_empty());
    }
}
