mod provider_binary;
mod python_sdks;
