mod decoders;
mod emulator;
