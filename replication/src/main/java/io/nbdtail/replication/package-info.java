/**
 * Live mirroring of a volume to another tail: dirty tracking, copy passes and cutover, written against a sink
 * interface so that the engine can be tested without a network. Filled in by the mirroring work; the module
 * exists now so that the dependency direction {@code snapshot <- replication <- nbd-server} is fixed from the
 * start.
 */
package io.nbdtail.replication;
