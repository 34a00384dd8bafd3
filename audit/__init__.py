"""Dataset audits over the manifests: statistics, the HTML report and notebook helpers."""
