//! Bindings generated from the repository's `wit/`, one module per world.
//!
//! Each world sits behind its own cargo feature: wit-bindgen links a custom section describing
//! every generated world into the component, and a component must implement exactly one world.

#[cfg(feature = "strategy")]
pub mod strategy {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "zonebroker:plugin/strategy",
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "__export_strategy_world",
        default_bindings_module: "zonebroker_plugin_sdk::__bindings::strategy",
        runtime_path: "zonebroker_plugin_sdk::__wit_bindgen::rt",
    });
}

#[cfg(feature = "provider")]
pub mod provider {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "zonebroker:plugin/vm-provider",
        // (No extra derives: the WASI resources this world pulls in cannot compare.)
        pub_export_macro: true,
        export_macro_name: "__export_provider_world",
        default_bindings_module: "zonebroker_plugin_sdk::__bindings::provider",
        runtime_path: "zonebroker_plugin_sdk::__wit_bindgen::rt",
        generate_all,
    });
}

#[cfg(feature = "generator")]
pub mod generator {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "zonebroker:plugin/script-generator",
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "__export_generator_world",
        default_bindings_module: "zonebroker_plugin_sdk::__bindings::generator",
        runtime_path: "zonebroker_plugin_sdk::__wit_bindgen::rt",
    });
}
