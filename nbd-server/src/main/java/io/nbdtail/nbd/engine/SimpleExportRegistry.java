package io.nbdtail.nbd.engine;

import java.net.SocketAddress;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;

/** An {@link ExportRegistry} without access control: every client may open every export. */
public final class SimpleExportRegistry implements ExportRegistry {
    private final ConcurrentHashMap<String, Export> exports = new ConcurrentHashMap<>();

    /** Adds {@code export}; fails if the name is taken. */
    public void add(final Export export) {
        if (exports.putIfAbsent(export.name(), export) != null) {
            throw new IllegalStateException("export " + export.name() + " already exists");
        }
    }

    public Export remove(final String name) {
        return exports.remove(name);
    }

    public List<Export> all() {
        final List<Export> list = new ArrayList<>(exports.values());
        list.sort(Comparator.comparing(Export::name));
        return list;
    }

    /**
     * {@inheritDoc}
     *
     * <p>The empty name is the NBD default export: when exactly one export exists, it is that one, so
     * {@code nbdinfo -- [ nbdtail serve ... ]} and {@code nbd://host:port} work on a single-volume server. With
     * several exports the empty name matches none.
     */
    @Override
    public Export find(final String name, final SocketAddress client) {
        if (name.isEmpty() && exports.size() == 1) {
            return exports.values().iterator().next();
        }
        return exports.get(name);
    }

    @Override
    public List<Export> list(final SocketAddress client) {
        return all();
    }
}
