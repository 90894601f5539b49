mod emulator;
mod provider_binary;
mod proxy;
mod python_sdks;
