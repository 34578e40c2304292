echo target > real-file && ln -s real-file link-to-file
mkdir -p dir-with-links real-dir && echo r > real-dir/r && ln -s ../real-file dir-with-links/up && ln -s r dir-with-links/rel && ln -s real-dir link-to-dir
