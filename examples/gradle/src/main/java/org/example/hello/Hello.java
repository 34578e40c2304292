package org.example.hello;

/** The application the example packages: it says where it runs. */
public final class Hello {
    private Hello() {}

    public static void main(String[] args) {
        String who = args.length > 0 ? String.join(" ", args) : "kiln and Gradle";
        System.out.println("Hello from " + who + ", on Java " + Runtime.version().feature());
    }
}
