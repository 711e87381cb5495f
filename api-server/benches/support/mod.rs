//! What the benchmarks share.

use conda_store_api_server::app::App;
use conda_store_api_server::auth::jwt::Claims;

/// An hour's token of an admin of every namespace: the benchmarks measure serving, not denial.
pub fn admin_token(app: &App) -> String {
    let claims = Claims {
        sub: Some("bench".into()),
        exp: jiff::Timestamp::now().as_second() + 3600,
        primary_namespace: "bench".into(),
        role_bindings: [("*/*".to_string(), vec!["admin".to_string()])]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    app.auth.signer.sign(&claims)
}
