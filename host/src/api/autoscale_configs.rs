//! `/api/v1/autoscale-configs`.

use super::records::{AutoScaleConfig, AutoScaleConfigView};

super::resource::named_resource! {
    collection: "/autoscale-configs",
    item: "/autoscale-configs/{name}",
    tag: "autoscale",
    body: AutoScaleConfig,
    view: AutoScaleConfigView,
    versioned: yes,
    broker: { list: autoscale_configs, get: autoscale_config, create: create_autoscale_config, update: update_autoscale_config, delete: delete_autoscale_config },
    docs: {
        list: "Every AutoScale config, with its status.",
        get: "One AutoScale config, with its status (`last_error`, available sessions, servers).",
        create: "Create an AutoScale config. Its startup script is rendered with sample values: an unknown variable, a lone brace or an unquoted credential is refused (422 on `startup_script`, with the line and column).",
        update: "Change an AutoScale config (a password left out keeps its value).",
        delete: "Delete an AutoScale config that has no servers left (disable it and let the reconcile loop drain them first).",
    },
}
