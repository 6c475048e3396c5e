package io.nbdtail.replication;

import io.nbdtail.layer.LayeredDevice;
import io.nbdtail.layer.Manifest;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * One snapshot as a mirror copies it: the destination rebuilds the snapshot tree by replaying it, so each
 * snapshot travels as the clusters its own layer holds, on top of its parent, then is sealed under its name and
 * creation time.
 *
 * @param name         the snapshot's name.
 * @param parent       the snapshot it rests on, or {@code null} for the bottom layer.
 * @param created      its creation time as the manifest records it (ISO-8601).
 * @param dataClusters clusters its layer holds as data, or -1 for the bottom layer (the destination keeps that in
 *                     its plain base file, which has no cluster map); the destination checks it before sealing.
 * @param zeroClusters clusters its layer marks as zeros, or -1 for the bottom layer.
 */
public record SnapshotLayer(String name, String parent, String created, long dataClusters, long zeroClusters) {

    /** The snapshots and the active layer's parent of a volume, as a mirror copies them. */
    public record Plan(List<SnapshotLayer> snapshots, String topParent) {
    }

    /**
     * The snapshot tree of {@code layers} in copy order: depth first from the bottom layer, children in the order
     * the manifest lists them, so every snapshot comes after its parent.
     *
     * @throws MirrorRefusedException if the tree has more than one root (its oldest snapshot was deleted after a
     *                                rollback, so two branches rest on nothing): the destination has one base.
     */
    public static Plan plan(final LayeredDevice layers) throws IOException {
        final Manifest m = layers == null ? null : layers.manifest();
        if (m == null || m.layers().size() < 2) {
            return new Plan(List.of(), null);
        }
        final List<Manifest.LayerRecord> roots = new ArrayList<>();
        for (final Manifest.LayerRecord r : m.layers()) {
            if (r.parent() == null) {
                roots.add(r);
            }
        }
        if (roots.size() != 1 || roots.getFirst().active()) {
            throw new MirrorRefusedException("the snapshots of this volume rest on " + roots.size() + " separate"
                + " bottom layers (its oldest snapshot was deleted after a rollback); a mirror rebuilds one tree."
                + " Delete the snapshots of all branches but one, then mirror");
        }
        final List<SnapshotLayer> out = new ArrayList<>();
        final List<Manifest.LayerRecord> stack = new ArrayList<>(roots);
        while (!stack.isEmpty()) {
            final Manifest.LayerRecord r = stack.removeLast();
            if (r.active()) {
                continue;
            }
            final Manifest.LayerRecord parent = r.parent() == null ? null : m.layer(r.parent());
            final long[] held = parent == null ? null : layers.heldClusters(r.snapshot());
            out.add(new SnapshotLayer(r.snapshot(), parent == null ? null : parent.snapshot(), r.created(),
                held == null ? -1 : held[0], held == null ? -1 : held[1]));
            stack.addAll(m.children(r.id()).reversed());
        }
        return new Plan(out, m.layer(m.active().parent()).snapshot());
    }
}
