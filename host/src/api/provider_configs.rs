//! `/api/v1/vm-provider-configs`.

use super::records::VmProviderConfig;

super::resource::named_resource! {
    collection: "/vm-provider-configs",
    item: "/vm-provider-configs/{name}",
    tag: "autoscale",
    body: VmProviderConfig,
    view: VmProviderConfig,
    versioned: yes,
    broker: { list: provider_configs, get: provider_config, create: create_provider_config, update: update_provider_config, delete: delete_provider_config },
    docs: {
        list: "Every VM provider config (secret settings left out).",
        get: "One VM provider config (secret settings left out).",
        create: "Create a VM provider config; the provider plugin's `validate` checks the settings. Secret settings are write-only.",
        update: "Change a VM provider config; secret settings left out keep their values. Every AutoScale config using it sees the change.",
        delete: "Delete a VM provider config no AutoScale config uses.",
    },
}
