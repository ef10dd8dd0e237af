//! `/api/v1/ldap-configs`.

use super::records::LdapConfig;

super::resource::named_resource! {
    collection: "/ldap-configs",
    item: "/ldap-configs/{name}",
    tag: "autoscale",
    body: LdapConfig,
    view: LdapConfig,
    versioned: no,
    broker: { list: ldap_configs, get: ldap_config, create: create_ldap_config, update: update_ldap_config, delete: delete_ldap_config },
    docs: {
        list: "Every LDAP config (bind passwords left out).",
        get: "One LDAP config (bind password left out).",
        create: "Create an LDAP config: the directory AutoScale configs create Active Directory computer records in. Always over TLS (`ldaps://`, or `ldap://` with StartTLS); the bind password is write-only.",
        update: "Change an LDAP config (a password left out keeps its value).",
        delete: "Delete an LDAP config no AutoScale config uses.",
    },
}
