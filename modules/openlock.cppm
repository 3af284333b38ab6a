// SPDX-License-Identifier: MIT
// openlock: cross-process file locks that work where OS lock primitives don't (NFS, containers, across
// hosts).
export module openlock;
export import :errors;
export import :options;
export import :record;
export import :file_lock;
export import :status;
export import :concepts;
