//! Which network addresses a VM-provider plugin may reach. Link-local addresses (where cloud
//! metadata services answer) never; loopback, private and other non-public ranges only when
//! the provider config allows private endpoints (on-premises hypervisors, emulators).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of network an address belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    /// Routable on the internet.
    Public,
    /// Loopback, private, shared (CGNAT), unspecified, multicast, broadcast or reserved.
    Private,
    /// Link-local (169.254.0.0/16, fe80::/10), and AWS's IPv6 metadata address: cloud
    /// metadata services.
    LinkLocal,
}

/// Why a provider may not reach an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRefusal {
    #[error("{address} is a link-local address (cloud metadata): never allowed")]
    LinkLocal { address: IpAddr },
    #[error(
        "{address} is a loopback or private address: allowed only with `allow_private_endpoints: true` on the provider config"
    )]
    Private { address: IpAddr },
}

/// The class of `address`; IPv4 inside IPv6 (mapped, NAT64, 6to4) counts as that IPv4.
pub fn classify(address: IpAddr) -> AddressClass {
    match address {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether a provider may reach `address`.
pub fn check_address(address: IpAddr, allow_private: bool) -> Result<(), EndpointRefusal> {
    match classify(address) {
        AddressClass::Public => Ok(()),
        AddressClass::Private if allow_private => Ok(()),
        AddressClass::Private => Err(EndpointRefusal::Private { address }),
        AddressClass::LinkLocal => Err(EndpointRefusal::LinkLocal { address }),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if a == 169 && b == 254 {
        return AddressClass::LinkLocal;
    }
    let private = a == 0 // "this network"
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || a == 127
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 224; // multicast, reserved, broadcast
    if private {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
    };
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_v4(segments[6], segments[7]));
    }
    if segments[0] == 0x2002 {
        return classify_v4(embedded_v4(segments[1], segments[2]));
    }
    // AWS's instance metadata service over IPv6.
    const AWS_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    if (segments[0] & 0xffc0) == 0xfe80 || ip == AWS_METADATA {
        return AddressClass::LinkLocal;
    }
    let private = segments[0] == 0 // ::, ::1, IPv4-compatible and other reserved
        || (segments[0] & 0xfe00) == 0xfc00 // unique local
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (segments[0] & 0xff00) == 0xff00 // multicast
        || segments[..4] == [0x100, 0, 0, 0] // discard
        || (segments[0] == 0x2001 && segments[1] == 0xdb8); // documentation
    if private {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(address: &str) -> AddressClass {
        classify(address.parse().unwrap())
    }

    #[test]
    fn link_local_addresses_are_cloud_metadata() {
        for address in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "fd00:ec2::254",
        ] {
            assert_eq!(class(address), AddressClass::LinkLocal, "{address}");
        }
    }

    #[test]
    fn loopback_private_and_reserved_ranges_are_private() {
        for address in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert_eq!(class(address), AddressClass::Private, "{address}");
        }
    }

    #[test]
    fn internet_addresses_are_public() {
        for address in [
            "52.94.0.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "192.169.0.1",
            "2600:1f18::1",
            "::ffff:52.94.0.1",
            "2a00:1450::1",
        ] {
            assert_eq!(class(address), AddressClass::Public, "{address}");
        }
    }

    #[test]
    fn private_addresses_need_the_flag_and_link_local_ones_are_never_allowed() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        let public: IpAddr = "52.94.0.1".parse().unwrap();
        assert_eq!(
            check_address(loopback, false),
            Err(EndpointRefusal::Private { address: loopback })
        );
        assert_eq!(check_address(loopback, true), Ok(()));
        for allow_private in [false, true] {
            assert_eq!(
                check_address(metadata, allow_private),
                Err(EndpointRefusal::LinkLocal { address: metadata })
            );
            assert_eq!(check_address(public, allow_private), Ok(()));
        }
    }
}
