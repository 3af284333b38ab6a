// SPDX-License-Identifier: MIT
// openlock.etcd: the lock of openlock held in an etcd cluster instead of a shared file system (issue 15). A
// module and a target of its own (openlock::etcd), so that users of file locks pay nothing for it.
export module openlock.etcd;
export import openlock;
export import :lock;
