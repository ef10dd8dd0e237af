//! `/api/v1/workspaces`.

use super::records::Workspace;

super::resource::named_resource! {
    collection: "/workspaces",
    item: "/workspaces/{name}",
    tag: "workspaces",
    body: Workspace,
    view: Workspace,
    versioned: no,
    broker: { list: workspaces, get: workspace, create: create_workspace, update: update_workspace, delete: delete_workspace },
    docs: {
        list: "Every workspace.",
        get: "One workspace.",
        create: "Create a workspace: a `container` workspace runs an image on an agent; a `pool` workspace takes a slot on a server of a pool.",
        update: "Change a workspace.",
        delete: "Delete a workspace no session runs.",
    },
}
