package io.nbdtail.tools;

import io.nbdtail.layer.LayeredDevice;
import io.nbdtail.layer.SnapshotException;
import io.nbdtail.tools.online.OnlineSnapshot;
import io.nbdtail.tools.online.Output;
import io.nbdtail.tools.online.ServerOptions;
import io.nbdtail.volume.Sizes;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeService;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/**
 * {@code nbdtail snapshot ...}: copy-on-write snapshots of a volume. With a data directory the commands open the
 * volume directly (they take the data directory's lock, so they refuse while a server serves it); without one
 * they go through the running server's control API, which does the same online.
 */
@Command(name = "snapshot", mixinStandardHelpOptions = true,
    description = "Take, list, delete, roll back to and clone snapshots of a volume.",
    subcommands = {SnapshotCommand.Create.class, SnapshotCommand.ListSnapshots.class, SnapshotCommand.Delete.class,
        SnapshotCommand.Rollback.class, SnapshotCommand.Clone.class})
final class SnapshotCommand {
    private SnapshotCommand() {
    }

    /** Options and arguments every snapshot command shares. */
    abstract static class Base implements Callable<Integer> {
        @Spec
        CommandSpec spec;
        @Mixin
        DataDirOption dataDir;
        @Mixin
        ServerOptions server;
        @Parameters(index = "0", paramLabel = "VOLUME")
        String volume;

        /** Runs {@code action} on the volume opened offline, under the data directory's lock. */
        <T> T offline(final String what, final Action<T> action) throws Exception {
            final VolumeService service = VolumeService.open(dataDir.dataDir());
            try (AutoCloseable ignored = VolumeCommand.lockForChange(service, what);
                 Volume v = service.openVolume(volume, Runnable::run)) {
                try {
                    return action.run(service, v);
                } catch (final SnapshotException e) {
                    throw VolumeService.snapshotError(e);
                }
            }
        }

        @Override
        public Integer call() throws Exception {
            return server.online(dataDir.explicit()) ? online() : offline();
        }

        abstract int online() throws Exception;

        abstract int offline() throws Exception;

        PrintWriter out() {
            return spec.commandLine().getOut();
        }
    }

    @FunctionalInterface
    interface Action<T> {
        T run(VolumeService service, Volume volume) throws Exception;
    }

    @Command(name = "create", mixinStandardHelpOptions = true,
        description = "Take a snapshot: instant, no data copied; writes acknowledged before it are in it.")
    static final class Create extends Base {
        @Parameters(index = "1", paramLabel = "NAME", description = "Snapshot name (volume name rules); the snapshot"
            + " is served read-only as the export VOLUME@NAME.")
        private String name;
        @Option(names = "--json", description = "Print the snapshot as JSON.")
        private boolean json;

        @Override
        int online() throws Exception {
            return OnlineSnapshot.create(spec, server, volume, name, json);
        }

        @Override
        int offline() throws Exception {
            io.nbdtail.server.VolumeManager.checkSnapshotName(name);
            offline("snapshot volume '" + volume + "'", (s, v) -> {
                v.layers().createSnapshot(name, Instant.now().truncatedTo(ChronoUnit.MILLIS));
                return null;
            });
            out().println("took snapshot " + volume + "@" + name);
            return 0;
        }
    }

    @Command(name = "list", mixinStandardHelpOptions = true,
        description = "List a volume's snapshots with the bytes each layer holds.")
    static final class ListSnapshots extends Base {
        @Option(names = "--json", description = "Print a JSON array, for scripts.")
        private boolean json;

        @Override
        int online() throws Exception {
            return OnlineSnapshot.list(spec, server, volume, json);
        }

        @Override
        int offline() throws Exception {
            final List<LayeredDevice.SnapshotInfo> all = offline("list the snapshots of '" + volume + "'",
                (s, v) -> v.layers().snapshots());
            if (json) {
                final var array = new com.fasterxml.jackson.databind.ObjectMapper().createArrayNode();
                for (final LayeredDevice.SnapshotInfo i : all) {
                    array.addObject().put("name", i.name()).put("created", i.created().toString())
                        .put("parent", i.parent()).put("ownedBytes", i.ownedBytes())
                        .put("inLiveChain", i.inLiveChain());
                }
                out().println(array.toPrettyString());
                return 0;
            }
            if (all.isEmpty()) {
                out().println("volume " + volume + " has no snapshots; take one with: nbdtail snapshot create "
                    + volume + " NAME");
                return 0;
            }
            final List<String[]> table = new ArrayList<>();
            table.add(new String[] {"NAME", "CREATED", "OWNED", "PARENT", "LIVE CHAIN"});
            for (final LayeredDevice.SnapshotInfo i : all) {
                table.add(new String[] {i.name(), i.created().toString(), Sizes.format(i.ownedBytes()),
                    i.parent() == null ? "-" : i.parent(), i.inLiveChain() ? "yes" : "no"});
            }
            Output.table(out(), table);
            return 0;
        }
    }

    @Command(name = "delete", mixinStandardHelpOptions = true,
        description = "Delete a snapshot by merging its layer into the layer(s) above; the volume stays online.")
    static final class Delete extends Base {
        @Parameters(index = "1", paramLabel = "NAME")
        private String name;
        @Option(names = "--wait", description = "Online: wait for the merge to finish, with progress.")
        private boolean wait;
        @Option(names = "--json", description = "Print the operation as JSON.")
        private boolean json;

        @Override
        int online() throws Exception {
            return OnlineSnapshot.delete(spec, server, volume, name, wait, json);
        }

        @Override
        int offline() throws Exception {
            offline("delete a snapshot of '" + volume + "'", (s, v) -> {
                v.layers().deleteSnapshot(name);
                return null;
            });
            out().println("deleted snapshot " + volume + "@" + name);
            return 0;
        }
    }

    @Command(name = "rollback", mixinStandardHelpOptions = true,
        description = {"Make the volume's contents those of a snapshot again. Writes since the snapshot are lost;"
            + " the snapshot and all others stay.", "Refused while clients are connected: stop the VM first."})
    static final class Rollback extends Base {
        @Parameters(index = "1", paramLabel = "NAME")
        private String name;

        @Override
        int online() throws Exception {
            return OnlineSnapshot.rollback(spec, server, volume, name);
        }

        @Override
        int offline() throws Exception {
            offline("roll back '" + volume + "'", (s, v) -> {
                v.layers().rollback(name);
                return null;
            });
            out().println("rolled volume " + volume + " back to snapshot " + name);
            return 0;
        }
    }

    @Command(name = "clone", mixinStandardHelpOptions = true,
        description = "Create a new writable volume from a snapshot; the snapshot's layers are shared, not copied.")
    static final class Clone extends Base {
        @Parameters(index = "1", paramLabel = "NAME")
        private String name;
        @Parameters(index = "2", paramLabel = "NEW-VOLUME")
        private String newVolume;

        @Override
        int online() throws Exception {
            return OnlineSnapshot.cloneVolume(spec, server, volume, name, newVolume);
        }

        @Override
        int offline() throws Exception {
            offline("clone '" + volume + "'", (s, v) -> s.cloneVolume(v, name, newVolume));
            out().println("created volume " + newVolume + " from " + volume + "@" + name);
            return 0;
        }
    }
}
